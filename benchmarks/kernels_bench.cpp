// CPU kernel microbenchmarks at DeepSeekMath 7B shapes.
//   linear: decode (m = 1) and a decode batch (m = 16), q/k/v/o (4096 x 4096) and gate/up
//   (11008 x 4096) in bf16, plus f16/f32 and down_proj (4096 x 11008). Counters:
//     weight_GB/s  weight bytes streamed per second (decode is memory-bound on these)
//     us_per_token time / m: a batch of 16 should cost far less than 16 matvecs
//     vs_ref       linear_reference time / this time, the speed-up over the plain loop
//   "hot" reuses one weight matrix (L3-resident on big server caches), "cold" cycles
//   through >= 1 GiB of copies so weights come from DRAM as they do in a real forward.
//   linear_chunked: the row-parallel layers' fixed-order sum (8 chunks at tp 1) against the
//     plain sum (chunks 1) on the best path, hot, for the cost of bitwise-equal tp.
//   attention: one decode step over a 1024-token cache, 32 heads x 128; a 512-token prompt.
//   silu_mul: 64 rows x 11008 on each instruction set, against the scalar std::exp loop.
//   Each linear path (amx-bf16, avx512-bf16, avx512, avx2, portable) is measured; linear() takes
//   the best one.
// Run: kernels_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "common/core/dtype.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "tests/support/random_floats.h"

namespace {

using dsmath::DType;
using dsmath::WeightView;

using dsmath::testing::random_floats;

std::vector<uint16_t> random_half(size_t n, DType t) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-0.05f, 0.05f);
  std::vector<uint16_t> v(n);
  for (auto& h : v)
    h = t == DType::BF16 ? dsmath::f32_to_bf16(dist(rng)) : dsmath::f32_to_f16(dist(rng));
  return v;
}

// Copies of one random weight matrix per (dtype, rows, cols): "hot" runs reuse copy 0
// (served from the large shared L3 of server CPUs), "cold" runs cycle through enough copies
// (>= 1 GiB) that every call streams its weights from DRAM, as a 13.8 GB model does. Each
// copy also has the packed copy the CPU backend keeps where linear() reads one (AVX512-BF16).
const std::vector<WeightView>& weights(DType t, int64_t rows, int64_t cols) {
  struct Pool {
    std::vector<std::vector<unsigned char>> copies;
    std::vector<std::shared_ptr<const void>> packed;  // as the CPU backend holds them
    std::vector<WeightView> views;
  };
  static std::map<std::tuple<DType, int64_t, int64_t>, Pool> cache;
  Pool& pool = cache[std::make_tuple(t, rows, cols)];
  if (pool.views.empty()) {
    const size_t n = size_t(rows * cols), bytes = n * dsmath::dtype_size(t);
    std::vector<unsigned char> first(bytes);
    if (t == DType::F32) {
      const auto f = random_floats(n, 9);
      std::memcpy(first.data(), f.data(), bytes);
    } else {
      const auto h = random_half(n, t);
      std::memcpy(first.data(), h.data(), bytes);
    }
    const size_t copies = std::max<size_t>(2, ((size_t(1) << 30) + bytes - 1) / bytes);
    pool.copies.assign(copies, first);
    for (auto& c : pool.copies) {
      WeightView view{c.data(), t, rows, cols};
      pool.packed.push_back(dsmath::cpu::pack_for_linear(view));
      view.packed = pool.packed.back().get();
      pool.views.push_back(view);
    }
  }
  return pool.views;
}

// Seconds of one linear_reference call at this shape, measured once.
double reference_seconds(const float* x, int64_t m, const WeightView& w, float* y) {
  static std::map<std::tuple<DType, int64_t, int64_t, int64_t>, double> cache;
  auto key = std::make_tuple(w.dtype, m, w.rows, w.cols);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const auto t0 = std::chrono::steady_clock::now();
  dsmath::cpu::linear_reference(x, m, w, y);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cache[key] = s;
  return s;
}

void BM_Linear(benchmark::State& state, dsmath::cpu::LinearPath path) {
  if (!dsmath::cpu::linear_path_supported(path)) {
    state.SkipWithError("this CPU lacks the instructions of this path");
    return;
  }
  const auto t = DType(state.range(0));
  const int64_t m = state.range(1), rows = state.range(2), cols = state.range(3);
  const bool cold = state.range(4) != 0;
  const auto& pool = weights(t, rows, cols);
  const auto x = random_floats(size_t(m * cols), 3);
  std::vector<float> y(size_t(m * rows));
  const double ref = reference_seconds(x.data(), m, pool[0], y.data());
  size_t next = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    dsmath::cpu::linear_on_path(path, x.data(), m, pool[cold ? next++ % pool.size() : 0], y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double per_call =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
      double(state.iterations());
  const double bytes = double(rows * cols) * double(dsmath::dtype_size(t));
  state.counters["weight_GB/s"] = bytes * 1e-9 / per_call;
  state.counters["GFLOP/s"] = 2.0 * double(m * rows * cols) * 1e-9 / per_call;
  state.counters["us_per_token"] = per_call * 1e6 / double(m);
  state.counters["vs_ref"] = ref / per_call;
  state.SetLabel(std::string(dsmath::dtype_name(t)) + (cold ? " cold" : " hot"));
}

void LinearShapes(benchmark::internal::Benchmark* b) {
  const int64_t bf16 = int64_t(DType::BF16);
  for (int64_t cold : {0, 1})
    for (int64_t m : {1, 16}) {
      b->Args({bf16, m, 4096, 4096, cold});
      b->Args({bf16, m, 11008, 4096, cold});
    }
  b->Args({bf16, 1, 4096, 11008, 1});
  b->Args({int64_t(DType::F16), 1, 4096, 4096, 1});
  b->Args({int64_t(DType::F32), 1, 4096, 4096, 1});
  b->Args({bf16, 128, 4096, 4096, 1});
  b->Args({bf16, 128, 4096, 11008, 1});  // down_proj in prefill: 22 KiB rows
  b->Args({bf16, 1, 102400, 384, 1});    // the `small` preset's lm_head: short rows
  b->ArgNames({"dtype", "m", "n", "k", "cold"});
  b->UseRealTime();
}

BENCHMARK_CAPTURE(BM_Linear, amx_bf16, dsmath::cpu::LinearPath::Amx)->Apply(LinearShapes);
BENCHMARK_CAPTURE(BM_Linear, avx512_bf16, dsmath::cpu::LinearPath::Avx512Bf16)->Apply(LinearShapes);
BENCHMARK_CAPTURE(BM_Linear, avx512, dsmath::cpu::LinearPath::Avx512)->Apply(LinearShapes);
BENCHMARK_CAPTURE(BM_Linear, avx2, dsmath::cpu::LinearPath::Avx2)->Apply(LinearShapes);
BENCHMARK_CAPTURE(BM_Linear, portable, dsmath::cpu::LinearPath::Portable)->Apply(LinearShapes);

void BM_LinearChunked(benchmark::State& state) {
  const int64_t chunks = state.range(0), m = state.range(1), rows = state.range(2),
                cols = state.range(3);
  const auto& w = weights(DType::BF16, rows, cols)[0];
  const auto x = random_floats(size_t(m * cols), 3);
  std::vector<float> y(size_t(m * rows));
  for (auto _ : state) {
    dsmath::cpu::linear_chunked(x.data(), m, w, chunks, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
}
// o_proj and down_proj of the 7B shape and of the `small` preset (384 wide, 1024 MLP).
BENCHMARK(BM_LinearChunked)
    ->ArgsProduct({{1, 8}, {1, 16}, {4096}, {4096, 11008}})
    ->ArgsProduct({{1, 8}, {1, 16}, {384}, {384, 1024}})
    ->ArgNames({"chunks", "m", "n", "k"})
    ->UseRealTime();

void BM_AttentionDecode(benchmark::State& state) {
  const int64_t kv_len = state.range(0), heads = 32, d = 128;
  const auto q = random_floats(size_t(heads * d), 1);
  const auto k = random_floats(size_t(kv_len * heads * d), 2);
  const auto v = random_floats(size_t(kv_len * heads * d), 3);
  std::vector<float> out(size_t(heads * d));
  const dsmath::cpu::AttentionShape s{1, kv_len, heads, heads, d, heads * d};
  for (auto _ : state) {
    dsmath::cpu::causal_attention(q.data(), k.data(), v.data(), s, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_AttentionDecode)->Arg(1024)->ArgName("kv_len")->UseRealTime();

// One decode step of `count` samples forked from a prompt of `prompt` tokens (16-token blocks,
// each sample 1-16 tokens past it), heads x d as a model's: each sample alone over its blocks
// (shared:0) or the group through decode_attention_shared (shared:1), which reads the prompt's
// keys once for eight samples.
void BM_AttentionForks(benchmark::State& state) {
  const int64_t count = state.range(0), prompt = state.range(1), heads = state.range(2),
                d = state.range(3), shared = state.range(4), block = 16, stride = heads * d;
  const int64_t prompt_blocks = prompt / block;
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(count));
  std::vector<int64_t> kv_lens;
  int32_t next = int32_t(prompt_blocks);
  for (auto& t : tables) {
    for (int32_t b = 0; b < prompt_blocks; ++b) t.push_back(b);
    t.push_back(next++);
    kv_lens.push_back(prompt + 1 + int64_t(t.size()) % 16);
  }
  // 16 layers' pools, visited in turn, so each call finds its keys in memory, not in cache.
  constexpr int64_t kLayers = 16;
  const auto kv = random_floats(size_t(kLayers * next * block * stride), 2);
  int64_t layer = 0;
  const auto q = random_floats(size_t(count * stride), 1);
  std::vector<float> out(q.size());
  std::vector<const int32_t*> table_ptrs;
  std::vector<float*> outs;
  for (int64_t i = 0; i < count; ++i) {
    table_ptrs.push_back(tables[size_t(i)].data());
    outs.push_back(out.data() + i * stride);
  }
  const int64_t shared_keys = prompt / dsmath::cpu::kAttentionChunk * dsmath::cpu::kAttentionChunk;
  const dsmath::cpu::SharedDecode sd{q.data(), table_ptrs.data(), kv_lens.data(), outs.data(),
                                     count,    shared_keys,       block};
  for (auto _ : state) {
    const float* pool = kv.data() + (layer++ % kLayers) * next * block * stride;
    if (shared) {
      dsmath::cpu::decode_attention_shared(sd, pool, pool, {1, 1, heads, heads, d, stride});
    } else {
      for (int64_t i = 0; i < count; ++i)
        dsmath::cpu::causal_attention_paged(
            q.data() + i * stride, pool, pool, table_ptrs[size_t(i)], block,
            {1, kv_lens[size_t(i)], heads, heads, d, stride}, outs[size_t(i)]);
    }
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_AttentionForks)
    ->ArgsProduct({{32}, {1024}, {6}, {64}, {0, 1}})    // small
    ->ArgsProduct({{16}, {1024}, {32}, {128}, {0, 1}})  // the 7B shape
    ->ArgNames({"count", "prompt", "heads", "d", "shared"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// A prompt's attention (q_len = kv_len = 512, 32 heads x 128).
void BM_AttentionPrefill(benchmark::State& state) {
  const int64_t len = state.range(0), heads = 32, d = 128;
  const auto q = random_floats(size_t(len * heads * d), 1);
  const auto k = random_floats(size_t(len * heads * d), 2);
  const auto v = random_floats(size_t(len * heads * d), 3);
  std::vector<float> out(size_t(len * heads * d));
  const dsmath::cpu::AttentionShape s{len, len, heads, heads, d, heads * d};
  for (auto _ : state) {
    dsmath::cpu::causal_attention(q.data(), k.data(), v.data(), s, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_AttentionPrefill)
    ->Arg(512)
    ->ArgName("len")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// SiLU x up over a step's MLP activations (m rows x 11008): each instruction set's path, and
// "scalar_exp", the plain loop with std::exp it replaced (silu_mul_reference, on as many
// threads). Counter:
// Melem/s, millions of elements per second (all threads).
enum class SiluPath { ScalarExp, Portable, Avx2, Avx512 };
void BM_SiluMul(benchmark::State& state, SiluPath path) {
  using dsmath::cpu::detail::Isa;
  const Isa isa = path == SiluPath::Avx512 ? Isa::Avx512
                  : path == SiluPath::Avx2 ? Isa::Avx2
                                           : Isa::Portable;
  if (isa > dsmath::cpu::detail::hardware_isa()) {
    state.SkipWithError("this CPU lacks the instruction set");
    return;
  }
  const int64_t n = state.range(0) * 11008;
  const auto g = random_floats(size_t(n), 1, 6.0f), u = random_floats(size_t(n), 2);
  std::vector<float> out(static_cast<size_t>(n));
  for (auto _ : state) {
    if (path == SiluPath::ScalarExp) {  // threaded as silu_mul is
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; i += 4096)
        dsmath::cpu::silu_mul_reference(&g[size_t(i)], &u[size_t(i)],
                                        std::min<int64_t>(4096, n - i), &out[size_t(i)]);
    } else {
      dsmath::cpu::silu_mul_on(isa, g.data(), u.data(), n, out.data());
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["Melem/s"] =
      benchmark::Counter(double(n) * double(state.iterations()) / 1e6, benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_SiluMul, scalar_exp, SiluPath::ScalarExp)
    ->Arg(64)
    ->ArgName("m")
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_SiluMul, portable, SiluPath::Portable)->Arg(64)->ArgName("m")->UseRealTime();
BENCHMARK_CAPTURE(BM_SiluMul, avx2, SiluPath::Avx2)->Arg(64)->ArgName("m")->UseRealTime();
BENCHMARK_CAPTURE(BM_SiluMul, avx512, SiluPath::Avx512)->Arg(64)->ArgName("m")->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
