#include "coordinator/metrics.h"

#include <algorithm>
#include <cstdio>

#include "coordinator/router.h"
#include "coordinator/status_name.h"

namespace dsmath {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(number(value)).append("\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  std::lock_guard lock(mutex_);
  const size_t bucket =
      size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  std::lock_guard lock(mutex_);
  header(out, name, "histogram", help);
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    sample(out, bucket, "le=\"" + number(bounds_[i]) + "\"", double(cumulative));
  }
  cumulative += counts_.back();
  sample(out, bucket, "le=\"+Inf\"", double(cumulative));
  sample(out, std::string(name) + "_sum", "", sum_);
  sample(out, std::string(name) + "_count", "", double(cumulative));
}

Metrics::Metrics()
    : time_to_first_token({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      inter_token_latency({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
      request_duration({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}) {}

void Metrics::count_request(grpc::StatusCode code) {
  std::lock_guard lock(mutex_);
  ++requests_by_status_[std::string(status_code_name(code))];
}

std::string Metrics::render(const RouterSnapshot& s) const {
  std::string out;
  header(out, "dsmath_requests_total", "counter", "Finished or refused requests by gRPC status.");
  {
    std::lock_guard lock(mutex_);
    for (const auto& [status, n] : requests_by_status_)
      sample(out, "dsmath_requests_total", "status=\"" + status + "\"", double(n));
  }
  header(out, "dsmath_live_requests", "gauge", "Requests in flight.");
  sample(out, "dsmath_live_requests", "", double(s.live_requests));
  header(out, "dsmath_queue_depth", "gauge", "Requests waiting for their first token.");
  sample(out, "dsmath_queue_depth", "", double(s.queue_depth));
  header(out, "dsmath_worker_groups", "gauge", "Registered worker groups.");
  sample(out, "dsmath_worker_groups", "", double(s.groups.size()));
  header(out, "dsmath_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.");
  sample(out, "dsmath_prompt_tokens_total", "", double(prompt_tokens_.load()));
  header(out, "dsmath_generated_tokens_total", "counter", "Tokens generated.");
  sample(out, "dsmath_generated_tokens_total", "", double(generated_tokens_.load()));

  header(out, "dsmath_running_sequences", "gauge", "Sequences holding KV blocks, per group.");
  for (const GroupSnapshot& g : s.groups)
    sample(out, "dsmath_running_sequences", "group=\"" + g.id + "\"", double(g.stats.running()));
  header(out, "dsmath_waiting_sequences", "gauge", "Sequences queued in a group's engine.");
  for (const GroupSnapshot& g : s.groups)
    sample(out, "dsmath_waiting_sequences", "group=\"" + g.id + "\"", double(g.stats.queued()));
  header(out, "dsmath_kv_blocks", "gauge", "KV cache blocks per group by state.");
  for (const GroupSnapshot& g : s.groups) {
    const std::string id = "group=\"" + g.id + "\",state=";
    sample(out, "dsmath_kv_blocks", id + "\"used\"", g.stats.kv_blocks_used());
    sample(out, "dsmath_kv_blocks", id + "\"free\"", g.stats.kv_blocks_free());
    sample(out, "dsmath_kv_blocks", id + "\"cached\"", g.stats.kv_blocks_cached());
  }
  header(out, "dsmath_preemptions_total", "counter", "Sequences preempted, per group.");
  for (const GroupSnapshot& g : s.groups)
    sample(out, "dsmath_preemptions_total", "group=\"" + g.id + "\"",
           double(g.stats.preemptions()));

  time_to_first_token.render(out, "dsmath_time_to_first_token_seconds",
                             "Arrival to the first generated token.");
  inter_token_latency.render(out, "dsmath_inter_token_latency_seconds",
                             "Between consecutive tokens of one output.");
  request_duration.render(out, "dsmath_request_duration_seconds", "Arrival to the end.");
  return out;
}

}  // namespace dsmath
