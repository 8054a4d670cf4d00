// dsmath-bench-engine: the engine under load, on one replica (any tp under mpirun).
//   [mpirun -np N] dsmath-bench-engine --model DIR [--requests 256] [--rate R] [--prefix-test]
// Requests have random prompts (--prompt-min..--prompt-max tokens) and outputs (--out-min..
// --out-max), n in {1, 4}, sampled at --temperature (0.8) / --top-p (0.95). They arrive all at
// once, or as a Poisson stream of --rate requests/s. Reports generated tokens/s, time to first
// token and inter-token latency (p50/p99), and the share of step time spent outside the forward
// (scheduling, sampling, bookkeeping), overall and over steps with about 64 running sequences.
// --prefix-test: prompt throughput when every prompt starts with the same 400-token few-shot
// prefix, prefix cache on against off (a ratio from one run).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "common/checkpoint/checkpoint.h"
#include "worker/comm/collective_error.h"
#include "worker/comm/mpi_session.h"
#include "worker/engine/engine.h"
#include "worker/model/cpu_backend.h"

namespace dsmath {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(q * double(v.size() - 1) + 0.5))];
}

struct Options {
  std::string model_dir;
  int requests = 256, prompt_min = 50, prompt_max = 500, out_min = 32, out_max = 256;
  double rate = 0;  // requests/s; 0 = all at once
  double temperature = 0.8, top_p = 0.95;
  int max_step_tokens = 512, threads = 0, seed = 1;
  double kv_cache_gib = 4;
  bool prefix_test = false, both = false;
};

struct LoadResult {
  double seconds = 0;
  int64_t generated = 0, prompt_tokens = 0;
  std::vector<double> ttft, itl;
  double step_s = 0, forward_s = 0, sample_s = 0, step64_s = 0, forward64_s = 0;
  int64_t steps64 = 0;
};

LoadResult run_load(Engine& engine, std::vector<EngineRequest> requests, double rate,
                    uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(rate > 0 ? rate : 1.0);
  std::vector<double> arrival(requests.size(), 0.0);
  for (size_t i = 1; i < requests.size(); ++i)
    arrival[i] = rate > 0 ? arrival[i - 1] + gap(rng) : 0.0;

  LoadResult r;
  std::map<std::string, double> added_at;
  std::map<std::pair<std::string, int32_t>, double> last_token;
  std::map<std::string, bool> first_seen;
  const auto start = Clock::now();
  size_t next = 0;
  while (next < requests.size() || engine.has_work()) {
    const double now = since(start);
    while (next < requests.size() && arrival[next] <= now) {
      added_at[requests[next].key] = now;
      r.prompt_tokens += int64_t(requests[next].prompt.size());
      engine.add(std::move(requests[next++]));
    }
    if (!engine.has_work()) {
      std::this_thread::sleep_for(std::chrono::duration<double>(arrival[next] - now));
      continue;
    }
    const EngineStats s0 = engine.stats();
    const std::vector<EngineEvent> events = engine.step();
    const EngineStats s1 = engine.stats();
    r.step_s += s1.step_seconds - s0.step_seconds;
    r.forward_s += s1.forward_seconds - s0.forward_seconds;
    r.sample_s += s1.sample_seconds - s0.sample_seconds;
    if (s1.running >= 56 && s1.running <= 72) {
      r.step64_s += s1.step_seconds - s0.step_seconds;
      r.forward64_s += s1.forward_seconds - s0.forward_seconds;
      ++r.steps64;
    }
    const double t = since(start);
    for (const EngineEvent& e : events) {
      if (!e.token) continue;
      ++r.generated;
      const auto key = std::make_pair(e.key, e.sample_index);
      if (!first_seen[e.key]) {
        first_seen[e.key] = true;
        r.ttft.push_back(t - added_at[e.key]);
      }
      if (auto it = last_token.find(key); it != last_token.end()) r.itl.push_back(t - it->second);
      last_token[key] = t;
    }
  }
  r.seconds = since(start);
  return r;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n) {
  std::uniform_int_distribution<int32_t> id(10, 5000);
  std::vector<int32_t> t{100000};
  while (int(t.size()) < n) t.push_back(id(rng));
  return t;
}

std::vector<EngineRequest> make_requests(const Options& o) {
  std::mt19937_64 rng(uint64_t(o.seed));
  std::uniform_int_distribution<int> plen(o.prompt_min, o.prompt_max), olen(o.out_min, o.out_max);
  std::vector<EngineRequest> out;
  for (int i = 0; i < o.requests; ++i) {
    EngineRequest r;
    r.key = "r" + std::to_string(i);
    r.prompt = random_tokens(rng, plen(rng));
    r.params.temperature = o.temperature;
    r.params.top_p = o.top_p;
    r.params.seed = uint64_t(i);
    r.params.ignore_eos = true;
    r.params.max_new_tokens = olen(rng);
    r.n = rng() % 2 ? 4 : 1;
    out.push_back(std::move(r));
  }
  return out;
}

void print_load(const char* name, const LoadResult& r) {
  std::printf(
      "%-22s %8.1f gen tok/s  %7.1f prompt tok/s  TTFT p50 %7.1f ms p99 %7.1f ms  ITL p50 %6.1f "
      "ms p99 %6.1f ms  outside-forward %5.2f%% (sampling %5.2f%%; at ~64 running: %5.2f%% over "
      "%ld steps)\n",
      name, double(r.generated) / r.seconds, double(r.prompt_tokens) / r.seconds,
      1e3 * percentile(r.ttft, 0.5), 1e3 * percentile(r.ttft, 0.99), 1e3 * percentile(r.itl, 0.5),
      1e3 * percentile(r.itl, 0.99), 100.0 * (1 - r.forward_s / r.step_s),
      100.0 * r.sample_s / r.step_s, r.steps64 ? 100.0 * (1 - r.forward64_s / r.step64_s) : 0.0,
      long(r.steps64));
}

// Prompt tokens/s with a shared 400-token prefix and a distinct 50-token question each.
double prefix_throughput(ModelRunner& runner, EngineConfig config, bool cache, int requests,
                         int64_t* hits) {
  config.prefix_caching = cache;
  Engine engine(runner, config);
  std::mt19937_64 rng(5);
  const std::vector<int32_t> prefix = random_tokens(rng, 400);
  int64_t prompt_tokens = 0;
  const auto start = Clock::now();
  for (int i = 0; i < requests; ++i) {
    EngineRequest r;
    r.key = "q" + std::to_string(i);
    r.prompt = prefix;
    const auto question = random_tokens(rng, 51);
    r.prompt.insert(r.prompt.end(), question.begin() + 1, question.end());
    r.params.temperature = 0;
    r.params.max_new_tokens = 1;
    prompt_tokens += int64_t(r.prompt.size());
    engine.add(std::move(r));
  }
  while (engine.has_work()) engine.step();
  *hits = engine.stats().prefix_cache_hit_tokens;
  return double(prompt_tokens) / since(start);
}

int run(const Options& o, Communicator& comm) {
  MpiSession::set_threads_per_rank(o.threads);
  std::optional<Checkpoint> checkpoint;
  CpuBackend backend;  // outlives the model, whose weights it may hold
  std::optional<LlamaModel> model;
  collectively(comm, [&] {
    checkpoint.emplace(Checkpoint::open(o.model_dir));
    const TpLayout layout =
        TpLayout::make(checkpoint->config(), comm.topology().tp_size, comm.topology().tp_rank);
    model.emplace(*checkpoint, backend, comm,
                  PagedKVCache::blocks_for_bytes(checkpoint->config(), layout.local_kv_heads,
                                                 int64_t(o.kv_cache_gib * double(1ull << 30))));
  });
  ModelRunner runner(*model, comm);
  if (!runner.is_driver()) {
    runner.follow();
    return 0;
  }
  EngineConfig config;
  config.max_step_tokens = o.max_step_tokens;
  std::printf(
      "engine bench: %d requests, prompts %d-%d, outputs %d-%d, n in {1,4}, T %.2f, top_p %.2f, "
      "--max-step-tokens %d, tp %d, %d threads/rank\n",
      o.requests, o.prompt_min, o.prompt_max, o.out_min, o.out_max, o.temperature, o.top_p,
      o.max_step_tokens, comm.topology().tp_size, omp_get_max_threads());
  if (o.prefix_test) {
    int64_t hits_on = 0, hits_off = 0;
    const double on = prefix_throughput(runner, config, true, o.requests, &hits_on);
    const double off = prefix_throughput(runner, config, false, o.requests, &hits_off);
    std::printf(
        "shared 400-token prefix, %d prompts: prompt tok/s cache on %.1f, off %.1f, "
        "ratio %.2fx (cache hit tokens %ld)\n",
        o.requests, on, off, on / off, long(hits_on));
  } else {
    for (double rate : o.both ? std::vector<double>{0.0, o.rate} : std::vector<double>{o.rate}) {
      Engine engine(runner, config);
      const LoadResult r = run_load(engine, make_requests(o), rate, uint64_t(o.seed));
      print_load(rate > 0 ? "poisson" : "all at once", r);
    }
  }
  runner.shutdown();
  return 0;
}

}  // namespace
}  // namespace dsmath

int main(int argc, char** argv) {
  using namespace dsmath;
  MpiSession mpi(&argc, &argv);
  Options o;
  CLI::App app{"dsmath-bench-engine: the engine under load"};
  app.add_option("--model", o.model_dir, "Checkpoint directory")->required();
  app.add_option("--requests", o.requests, "Requests")->capture_default_str();
  app.add_option("--prompt-min", o.prompt_min)->capture_default_str();
  app.add_option("--prompt-max", o.prompt_max)->capture_default_str();
  app.add_option("--out-min", o.out_min)->capture_default_str();
  app.add_option("--out-max", o.out_max)->capture_default_str();
  app.add_option("--rate", o.rate, "Poisson arrivals, requests/s (0: all at once)");
  app.add_flag("--both", o.both, "All at once, then as a Poisson stream of --rate");
  app.add_option("--temperature", o.temperature)->capture_default_str();
  app.add_option("--top-p", o.top_p)->capture_default_str();
  app.add_option("--max-step-tokens", o.max_step_tokens)->capture_default_str();
  app.add_option("--kv-cache-gib", o.kv_cache_gib)->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads per rank");
  app.add_option("--seed", o.seed)->capture_default_str();
  app.add_flag("--prefix-test", o.prefix_test, "Shared 400-token prefix: cache on vs off");
  CLI11_PARSE(app, argc, argv);
  return mpi.run("dsmath-bench-engine", [&] {
    std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
    return run(o, *comm);
  });
}
