// dsmath-bench-serve: a gRPC load generator for a running dsmath-coordinator.
//   dsmath-bench-serve --server ADDR [--requests N] [--concurrency C] [--max-new-tokens M]
//                      [--temperature T] [--compare-sequential] [--single-stream-tokens K]
//                      [--duration S --deadline D]
// Sends N GenerateStream requests, C at a time (distinct prompts and seeds, ignore_eos so every
// request makes M tokens), and prints requests/s, generated tokens/s, TTFT p50/p99 and
// inter-token p50/p99. --compare-sequential runs the same requests one at a time as well and
// prints the continuous-batching speed-up; --single-stream-tokens K measures one stream's decode
// rate (tokens after the first / time after the first) for serve_bench.sh to compare with
// `dsmath-worker generate`. --duration S instead keeps C streams open for S seconds (a soak, for
// benchmarks/load_test.sh): every request must end OK or RESOURCE_EXHAUSTED (the coordinator's
// queue limit) within --deadline D seconds; one that does not counts as hung, and the exit
// status is 1 when any hung or failed otherwise.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "proto/dsmath.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using dsmath::v1::GenerateRequest;
using dsmath::v1::GenerateStreamResponse;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Options {
  std::string server = "127.0.0.1:50051";
  int requests = 64, concurrency = 16, max_new_tokens = 64;
  float temperature = 1.0f;
  bool compare_sequential = false;
  int single_stream_tokens = 0;
  double duration = 0, deadline = 120;  // soak mode
};

struct Run {
  double wall = 0;
  int64_t tokens = 0, failed = 0;
  std::vector<double> ttft, itl;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(p * double(v.size() - 1) + 0.5))];
}

GenerateRequest make_request(int i, int max_new_tokens, float temperature) {
  GenerateRequest r;
  r.set_prompt("Problem " + std::to_string(i) + ": what is " + std::to_string(17 * i % 97) + " + " +
               std::to_string(i) + "?");
  r.set_max_new_tokens(max_new_tokens);
  r.set_temperature(temperature);
  r.set_seed(uint64_t(i));
  r.set_ignore_eos(true);
  return r;
}

// One streamed request: appends its TTFT and inter-token gaps (one per new token message).
int64_t stream_one(dsmath::v1::Generation::Stub& stub, const GenerateRequest& r, Run& run,
                   std::mutex& mutex, double* decode_rate = nullptr) {
  grpc::ClientContext context;
  const Clock::time_point start = Clock::now();
  auto reader = stub.GenerateStream(&context, r);
  GenerateStreamResponse m;
  std::vector<double> gaps;
  std::optional<Clock::time_point> first, last;
  int64_t tokens = 0;
  while (reader->Read(&m)) {
    int64_t n = 0;
    for (const auto& o : m.outputs()) n += o.token_ids_size();
    if (n == 0) continue;
    const Clock::time_point now = Clock::now();
    if (!first)
      first = now;
    else
      gaps.push_back(seconds(now - *last) / double(n));
    last = now;
    tokens += n;
  }
  const grpc::Status status = reader->Finish();
  std::lock_guard lock(mutex);
  if (!status.ok()) {
    std::fprintf(stderr, "request failed: %s\n", status.error_message().c_str());
    ++run.failed;
    return 0;
  }
  if (first) run.ttft.push_back(seconds(*first - start));
  run.itl.insert(run.itl.end(), gaps.begin(), gaps.end());
  if (decode_rate && first && tokens > 1)
    *decode_rate = double(tokens - 1) / seconds(*last - *first);
  return tokens;
}

Run load(dsmath::v1::Generation::Stub& stub, const Options& o, int concurrency) {
  Run run;
  std::mutex mutex;
  std::atomic<int> next{0};
  std::atomic<int64_t> tokens{0};
  const Clock::time_point start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < concurrency; ++c)
    clients.emplace_back([&] {
      for (int i; (i = next++) < o.requests;)
        tokens += stream_one(stub, make_request(i, o.max_new_tokens, o.temperature), run, mutex);
    });
  for (auto& t : clients) t.join();
  run.wall = seconds(Clock::now() - start);
  run.tokens = tokens;
  return run;
}

void report(const char* label, const Options& o, int concurrency, const Run& r) {
  std::printf(
      "%-11s concurrency %3d: %d requests in %.2f s = %.2f req/s, %.1f generated tok/s, "
      "TTFT p50 %.1f ms p99 %.1f ms, inter-token p50 %.2f ms p99 %.2f ms%s\n",
      label, concurrency, o.requests, r.wall, double(o.requests) / r.wall,
      double(r.tokens) / r.wall, 1e3 * percentile(r.ttft, 0.5), 1e3 * percentile(r.ttft, 0.99),
      1e3 * percentile(r.itl, 0.5), 1e3 * percentile(r.itl, 0.99),
      r.failed ? (" (" + std::to_string(r.failed) + " FAILED)").c_str() : "");
}

// The soak: C clients issue requests back to back until the duration has passed.
int soak(dsmath::v1::Generation::Stub& stub, const Options& o) {
  std::mutex mutex;
  std::vector<double> latency;  // of completed requests
  int64_t ok = 0, exhausted = 0, hung = 0, other = 0;
  std::atomic<int> next{0};
  const Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(o.duration));
  std::vector<std::thread> clients;
  for (int c = 0; c < o.concurrency; ++c)
    clients.emplace_back([&] {
      while (Clock::now() < end) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(int64_t(o.deadline * 1000)));
        const Clock::time_point start = Clock::now();
        auto reader =
            stub.GenerateStream(&context, make_request(next++, o.max_new_tokens, o.temperature));
        GenerateStreamResponse m;
        while (reader->Read(&m)) {
        }
        const grpc::Status status = reader->Finish();
        {
          std::lock_guard lock(mutex);
          switch (status.error_code()) {
            case grpc::StatusCode::OK:
              ++ok;
              latency.push_back(seconds(Clock::now() - start));
              break;
            case grpc::StatusCode::RESOURCE_EXHAUSTED:
              ++exhausted;
              break;
            case grpc::StatusCode::DEADLINE_EXCEEDED:
              ++hung;
              break;
            default:
              if (other++ < 5)
                std::fprintf(stderr, "request failed: %s\n", status.error_message().c_str());
          }
        }
        // Refused for the queue limit: back off a little before asking again, as a client would.
        if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  for (auto& t : clients) t.join();
  std::printf(
      "soak: %d streams for %.0f s: %lld requests: %lld completed, %lld RESOURCE_EXHAUSTED, %lld "
      "hung (past the %.0f s deadline), %lld failed otherwise; completed latency p50 %.0f ms, p99 "
      "%.0f ms\n",
      o.concurrency, o.duration, (long long)(ok + exhausted + hung + other), (long long)ok,
      (long long)exhausted, (long long)hung, o.deadline, (long long)other,
      1e3 * percentile(latency, 0.5), 1e3 * percentile(latency, 0.99));
  return hung + other > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"dsmath-bench-serve: load generator for dsmath-coordinator"};
  app.add_option("--server", o.server)->capture_default_str();
  app.add_option("--requests", o.requests)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--concurrency", o.concurrency)->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--max-new-tokens", o.max_new_tokens)->capture_default_str();
  app.add_option("--temperature", o.temperature)->capture_default_str();
  app.add_flag("--compare-sequential", o.compare_sequential,
               "Also run the requests one at a time and print the batching speed-up");
  app.add_option("--single-stream-tokens", o.single_stream_tokens,
                 "Also time one stream of this many tokens (decode rate after the first token)");
  app.add_option("--duration", o.duration,
                 "Soak: keep --concurrency streams going for this many seconds instead")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--deadline", o.deadline,
                 "Soak: seconds a request may take before it counts as hung")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = dsmath::v1::Generation::NewStub(
      grpc::CreateCustomChannel(o.server, grpc::InsecureChannelCredentials(), args));
  load(*stub, Options{o.server, 2, 2, 4, o.temperature}, 2);  // warm-up: connections, caches
  if (o.duration > 0) return soak(*stub, o);

  const Run batched = load(*stub, o, o.concurrency);
  report("batched", o, o.concurrency, batched);
  int failed = int(batched.failed);
  if (o.compare_sequential) {
    const Run sequential = load(*stub, o, 1);
    report("sequential", o, 1, sequential);
    std::printf(
        "continuous batching speed-up at concurrency %d: %.2fx (generated tok/s)\n", o.concurrency,
        (double(batched.tokens) / batched.wall) / (double(sequential.tokens) / sequential.wall));
    failed += int(sequential.failed);
  }
  if (o.single_stream_tokens > 0) {
    Run run;
    std::mutex mutex;
    double rate = 0;
    stream_one(*stub, make_request(0, o.single_stream_tokens, 0.f), run, mutex, &rate);
    std::printf("single stream through gRPC: %.1f tok/s decode (%d tokens, after the first)\n",
                rate, o.single_stream_tokens);
    failed += int(run.failed);
  }
  return failed ? 1 : 0;
}
