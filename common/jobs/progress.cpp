#include "common/jobs/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

namespace dsmath {

Progress::Progress(std::string label)
    : label_(std::move(label)),
      terminal_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

std::string Progress::describe(const ProgressCounts& c, double seconds, int64_t samples_at_start) {
  const double rate = seconds > 0 ? double(c.tokens) / seconds : 0;
  const int64_t made = c.samples_done - samples_at_start;
  std::string eta = "?";
  if (made > 0 && seconds > 0) {
    const int64_t left = int64_t(double(c.samples_total - c.samples_done) * seconds / double(made));
    eta = left >= 60 ? std::to_string(left / 60) + "m" + std::to_string(left % 60) + "s"
                     : std::to_string(left) + "s";
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "%lld/%lld samples, %lld/%lld problems, %.1f tok/s, ETA %s",
                (long long)c.samples_done, (long long)c.samples_total, (long long)c.problems_done,
                (long long)c.problems_total, rate, eta.c_str());
  return buf;
}

void Progress::update(const ProgressCounts& c, bool final) {
  const auto now = std::chrono::steady_clock::now();
  if (samples_at_start_ < 0) samples_at_start_ = c.samples_done;
  const auto every = terminal_ ? std::chrono::milliseconds(500) : std::chrono::milliseconds(10000);
  if (!final && now - last_ < every) return;
  last_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const std::string text = describe(c, seconds, samples_at_start_);
  if (terminal_) {
    constexpr int kWidth = 24;
    const int filled =
        c.samples_total > 0 ? int(kWidth * c.samples_done / c.samples_total) : kWidth;
    std::cerr << "\r" << label_ << " [" << std::string(size_t(filled), '#')
              << std::string(size_t(kWidth - filled), '.') << "] " << text << "\x1b[K"
              << (final ? "\n" : "") << std::flush;
  } else {
    std::cerr << label_ << ": " << text << "\n";
  }
}

}  // namespace dsmath
