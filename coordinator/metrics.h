// The coordinator's Prometheus metrics: counters and histograms it keeps itself, rendered in
// the text exposition format (version 0.0.4) together with the gauges of a router snapshot
// (queue depth, groups, running sequences and KV blocks per group).
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace dsmath {

struct RouterSnapshot;

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_request(grpc::StatusCode code);  // once per request, by its final status
  void add_prompt_tokens(int64_t n) { prompt_tokens_ += n; }
  void add_generated_tokens(int64_t n) { generated_tokens_ += n; }
  Histogram time_to_first_token, inter_token_latency, request_duration;

  std::string render(const RouterSnapshot& snapshot) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, int64_t> requests_by_status_;
  std::atomic<int64_t> prompt_tokens_{0}, generated_tokens_{0};
};

}  // namespace dsmath
