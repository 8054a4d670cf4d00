#include "common/jobs/sample_log.h"

#include <fcntl.h>
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
  if (cut_bytes_ > 0) {
    DSMATH_CHECK(::ftruncate(fd_, off_t(good)) == 0, "cannot repair ", path.string(), ": ",
                 std::strerror(errno));
    ::fsync(fd_);
  }
  DSMATH_CHECK(::lseek(fd_, 0, SEEK_END) >= 0, "cannot seek ", path.string());
  last_sync_ = std::chrono::steady_clock::now();
}

SampleLog::~SampleLog() {
  if (fd_ < 0) return;
  ::fsync(fd_);
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
  // One write: a crash leaves the line whole or torn at the end, never interleaved.
  const ssize_t n = ::write(fd_, line.data(), line.size());
  if (n != ssize_t(line.size())) {
    const int err = errno;
    if (n > 0) (void)::ftruncate(fd_, ::lseek(fd_, 0, SEEK_END) - n);  // no half line stays
    fail("cannot write the output ", path_.string(), ": ",
         n < 0 ? std::strerror(err) : "short write (disk full?)");
  }
  done_.insert(key);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_sync_ >= std::chrono::seconds(2)) {
    ::fsync(fd_);
    last_sync_ = now;
  }
}

void SampleLog::sync() {
  DSMATH_CHECK(::fsync(fd_) == 0, "cannot sync the output ", path_.string(), ": ",
               std::strerror(errno));
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
  const std::string tmp = record.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << settings.dump(2) << "\n";
    DSMATH_CHECK(out.good(), "cannot write ", tmp);
  }
  std::filesystem::rename(tmp, record);
}

}  // namespace dsmath
