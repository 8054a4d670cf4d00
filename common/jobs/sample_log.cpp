#include "common/jobs/sample_log.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/core/error.h"

namespace dsmath {

std::pair<std::string, int64_t> SampleLog::key_of(const nlohmann::json& j) {
  if (j.contains("custom_id") && j.contains("response")) {
    const auto& choices = j.at("response").at("body").at("choices");
    return {j.at("custom_id").get<std::string>(), choices.at(0).at("index").get<int64_t>()};
  }
  return {j.at("id").is_string() ? j.at("id").get<std::string>() : j.at("id").dump(),
          j.at("sample_index").get<int64_t>()};
}

SampleLog::SampleLog(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  DSMATH_CHECK(fd_ >= 0, "cannot open the output ", path.string(), ": ", std::strerror(errno));
  // One writer per output: a second job on the same file would interleave lines.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    fail("the output ", path.string(), " is being written by another job (it holds its lock)");
  }
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  // Complete lines end with '\n'; anything after the last one is a torn write.
  size_t good = 0, line_number = 0;
  for (size_t start = 0; start < bytes.size();) {
    const size_t end = bytes.find('\n', start);
    if (end == std::string::npos) break;
    ++line_number;
    const std::string_view text(bytes.data() + start, end - start);
    try {
      nlohmann::json j = nlohmann::json::parse(text);
      done_.insert(key_of(j));
      existing_.push_back(std::move(j));
      good = end + 1;
    } catch (const std::exception& e) {
      // Only the last line may be damaged: a crash mid-write. Anything else is not our file.
      DSMATH_CHECK(bytes.find('\n', end + 1) == std::string::npos, path.string(), ":", line_number,
                   " is not a sample line (", e.what(), "); refusing to append to this file");
      break;
    }
    start = end + 1;
  }
  cut_bytes_ = bytes.size() - good;
  size_ = good;
  if (cut_bytes_ > 0) {
    DSMATH_CHECK(::ftruncate(fd_, off_t(good)) == 0, "cannot repair ", path.string(), ": ",
                 std::strerror(errno));
    sync();
  }
  last_sync_ = std::chrono::steady_clock::now();
}

SampleLog::~SampleLog() {
  if (fd_ < 0) return;
  ::fsync(fd_);  // best effort: run() ends with a checked sync()
  ::close(fd_);
}

bool SampleLog::done(const std::string& id, int64_t sample_index) const {
  return done_.count({id, sample_index}) != 0;
}

void SampleLog::append(const nlohmann::json& sample) {
  const auto key = key_of(sample);
  DSMATH_CHECK(!done_.count(key), "sample ", key.second, " of \"", key.first, "\" is in ",
               path_.string(), " already");
  const std::string line = sample.dump() + "\n";
  // Written at the end of what is known good: a crash leaves the line whole or torn at the
  // end, never interleaved. A short write (the disk filled mid-line) is continued, so that the
  // error that stopped it is the one reported; then the part written is cut back off.
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = ::pwrite(fd_, line.data() + done, line.size() - done, off_t(size_ + done));
    if (n > 0) {
      done += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    const int err = n < 0 ? errno : ENOSPC;  // 0 bytes and no error: nowhere to put them
    (void)::ftruncate(fd_, off_t(size_));
    fail_storage("cannot write the output ", path_.string(), ": ", std::strerror(err));
  }
  size_ += line.size();
  done_.insert(key);
  sync_if_due();
}

void SampleLog::sync_if_due() {
  if (std::chrono::steady_clock::now() - last_sync_ >= std::chrono::seconds(2)) sync();
}

void SampleLog::sync() {
  // Checked every time: Linux reports a failed writeback to one fsync only.
  if (::fsync(fd_) != 0)
    fail_storage("cannot sync the output ", path_.string(), ": ", std::strerror(errno));
  last_sync_ = std::chrono::steady_clock::now();
}

void check_job_settings(const std::filesystem::path& output, const nlohmann::json& settings) {
  const std::filesystem::path record = output.string() + ".job.json";
  if (std::filesystem::exists(record)) {
    nlohmann::json before;
    try {
      before = nlohmann::json::parse(std::ifstream(record));
    } catch (const std::exception& e) {
      fail(record.string(), ": not JSON (", e.what(), ")");
    }
    std::string differences;
    for (const auto& [key, value] : settings.items())
      if (!before.contains(key) || before[key] != value)
        differences += cat("\n  ", key, ": ", before.contains(key) ? before[key].dump() : "unset",
                           " before, ", value.dump(), " now");
    DSMATH_CHECK(differences.empty(), output.string(),
                 " was written with other settings; use the same flags to resume, or another "
                 "--output:",
                 differences);
    return;
  }
  const std::string tmp = cat(record.string(), ".tmp.", ::getpid());
  {
    std::ofstream out(tmp);
    out << settings.dump(2) << "\n";
    out.flush();
    if (!out.good()) {
      std::filesystem::remove(tmp);
      fail_storage("cannot write ", tmp, " (disk full?)");
    }
  }
  std::filesystem::rename(tmp, record);
}

}  // namespace dsmath
