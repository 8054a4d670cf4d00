// A job's progress on stderr: a bar redrawn in place on a terminal, a plain line every ten
// seconds otherwise (logs, CI). Problems and samples done of total, tokens/s, ETA.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dsmath {

struct ProgressCounts {
  int64_t problems_done = 0, problems_total = 0;
  int64_t samples_done = 0, samples_total = 0;
  int64_t tokens = 0;  // generated in this run
};

class Progress {
 public:
  explicit Progress(std::string label);
  // Redraws when due (0.5 s on a terminal, 10 s otherwise), or now when `final`.
  void update(const ProgressCounts& counts, bool final = false);
  // "120/800 samples, 15/100 problems, 350.2 tok/s, ETA 1m20s"
  static std::string describe(const ProgressCounts& counts, double seconds,
                              int64_t samples_at_start);

 private:
  std::string label_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_;
  int64_t samples_at_start_ = -1;
};

}  // namespace dsmath
