// The output of a batch job: append-only JSONL, one line per finished sample, written with one
// write(2) as soon as the sample is done and fsynced at least every two seconds (the job calls
// sync_if_due between steps) and at the end. The file is locked: one job writes it at a time.
// Opening an existing output reads what it holds: each complete line marks its (id,
// sample_index) done, and a torn last line (a write cut short by a crash) is cut off, so a
// restarted job skips what is done and never writes a pair twice.
//
// Next to it, OUT.job.json records the settings that decide the samples (sampling flags, prompt
// building, the model); a restart whose settings differ is refused with the differences named.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace dsmath {

class SampleLog {
 public:
  // Throws Error naming the file when it cannot be opened, or a line other than the last is not
  // a sample line.
  explicit SampleLog(const std::filesystem::path& path);
  ~SampleLog();
  SampleLog(const SampleLog&) = delete;
  SampleLog& operator=(const SampleLog&) = delete;

  bool done(const std::string& id, int64_t sample_index) const;
  const std::vector<nlohmann::json>& existing() const { return existing_; }
  size_t cut_bytes() const { return cut_bytes_; }  // of a torn last line

  void append(const nlohmann::json& sample);  // throws Error when the write fails
  void sync();                                // fsync now; throws Error when it fails
  void sync_if_due();  // fsync when the last one is 2 s old (call it while idle too)

  // (id, sample_index) of an output line: native ("id", "sample_index") or OpenAI batch
  // ("custom_id", response.body.choices[0].index). Throws Error when it is neither.
  static std::pair<std::string, int64_t> key_of(const nlohmann::json& line);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::set<std::pair<std::string, int64_t>> done_;
  std::vector<nlohmann::json> existing_;
  size_t cut_bytes_ = 0;
  size_t size_ = 0;  // bytes of complete lines: where the next one goes
  std::chrono::steady_clock::time_point last_sync_;
};

// Writes `settings` to OUTPUT.job.json, or checks them against the ones there. Throws Error
// naming each setting that differs.
void check_job_settings(const std::filesystem::path& output, const nlohmann::json& settings);

}  // namespace dsmath
