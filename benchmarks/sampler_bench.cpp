// Token sampling over one row of DeepSeekMath's 102,400 logits, per sampling setting, on a flat
// distribution (a random model's) and a peaked one (a trained model's: 40 likely tokens).
// The engine samples every running sequence's row after each forward, so this is the per-row
// cost that dsmath-bench-engine's "sampling" share adds up.
// Run: sampler_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "worker/engine/sampler.h"

namespace {

using dsmath::SamplingParams;

std::vector<float> logits(bool peaked) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0, 2.0f);
  std::vector<float> z(102400);
  for (float& v : z) v = normal(rng);
  if (peaked)
    for (size_t i = 0; i < 40; ++i) z[i * 997] += 14.0f;
  return z;
}

void run(benchmark::State& state, SamplingParams p, bool peaked) {
  const std::vector<float> z = logits(peaked);
  uint64_t step = 0;
  for (auto _ : state)
    benchmark::DoNotOptimize(dsmath::sample_token(z, p, {}, 0, {1, 0, step++}).token);
}

SamplingParams params(double temperature, double top_p, int64_t top_k, double min_p,
                      bool logprobs = false) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  p.top_k = top_k;
  p.min_p = min_p;
  p.logprobs = logprobs;
  return p;
}

}  // namespace

BENCHMARK_CAPTURE(run, greedy, params(0, 1, 0, 0), false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, greedy_logprobs, params(0, 1, 0, 0, true), false)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, temperature, params(0.8, 1, 0, 0), false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, min_p, params(0.8, 1, 0, 0.05), false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, top_p_flat, params(0.8, 0.95, 0, 0), false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, top_p_peaked, params(0.8, 0.95, 0, 0), true)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, top_k50_flat, params(0.8, 1, 50, 0), false)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(run, top_k50_peaked, params(0.8, 1, 50, 0), true)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
