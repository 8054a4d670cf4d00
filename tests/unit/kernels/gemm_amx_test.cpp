// The AMX-BF16 kernel (kernels/cpu/gemm_amx.inc). Its blocking, packing and tails run on every
// CPU through the emulation of the tile instructions (linear_amx_emulated) and are checked here
// the way kernels_test checks the other paths: against the reference, batch invariance and the
// chunk tree bit for bit. On a CPU with AMX the tile path itself must agree with the emulation
// (and kernels_test runs it through every linear() test as LinearPath::Amx).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/core/dtype.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_amx.h"
#include "tests/support/random_floats.h"

namespace dsmath::cpu {
namespace {

using dsmath::testing::random_floats;

struct Bf16Weight {
  std::vector<uint16_t> bits;
  std::vector<float> values;  // the same weights widened
  WeightView view;
};

Bf16Weight bf16_weight(int64_t n, int64_t k, uint32_t seed) {
  Bf16Weight w;
  for (float v : random_floats(size_t(n * k), seed)) {
    w.bits.push_back(f32_to_bf16(v));
    w.values.push_back(bf16_to_f32(w.bits.back()));
  }
  w.view = WeightView{w.bits.data(), DType::BF16, n, k};
  return w;
}

std::vector<float> emulated(const std::vector<float>& x, int64_t m, const WeightView& w,
                            int64_t chunks, bool split) {
  std::vector<float> y(size_t(m * w.rows), NAN);
  detail::linear_amx_emulated(x.data(), m, w, chunks, split, y.data());
  return y;
}

TEST(AmxEmulated, HandComputed) {
  // W = [[1, 2], [3, -4], [0.5, 0.25]] and x = [[1, 1], [2, -1]], all exact in bf16.
  const uint16_t wb[] = {f32_to_bf16(1),  f32_to_bf16(2),    f32_to_bf16(3),
                         f32_to_bf16(-4), f32_to_bf16(0.5f), f32_to_bf16(0.25f)};
  const std::vector<float> x = {1, 1, 2, -1};
  for (bool split : {true, false}) {
    const auto y = emulated(x, 2, WeightView{wb, DType::BF16, 3, 2}, 1, split);
    EXPECT_EQ(y, (std::vector<float>{3, -1, 0.75f, 0, 10, 0.75f})) << "split " << split;
  }
}

// Odd shapes: 1, 2 and 3 token tiles with ragged ends (m), ragged 32-row micro-calls and groups
// (n), ragged 32-column blocks and no columns at all (k). split: within f32 summation of the
// reference (x = hi + lo keeps ~17 bits); one part: the reference of x rounded to bf16.
TEST(AmxEmulated, MatchesReferenceOnOddShapes) {
  uint32_t seed = 100;
  for (int64_t m : {1, 15, 16, 17, 33, 40})
    for (int64_t n : {1, 31, 33, 70})
      for (int64_t k : {0, 1, 31, 32, 33, 100})
        for (bool split : {true, false}) {
          SCOPED_TRACE(::testing::Message()
                       << "m " << m << " n " << n << " k " << k << " split " << split);
          const auto w = bf16_weight(n, k, ++seed);
          auto x = random_floats(size_t(m * k), ++seed);
          const auto y = emulated(x, m, w.view, 1, split);
          if (!split)
            for (float& v : x) v = bf16_to_f32(f32_to_bf16(v));
          for (int64_t t = 0; t < m; ++t)
            for (int64_t r = 0; r < n; ++r) {
              double ref = 0, l1 = 0;
              for (int64_t i = 0; i < k; ++i) {
                ref += double(x[size_t(t * k + i)]) * w.values[size_t(r * k + i)];
                l1 += std::fabs(double(x[size_t(t * k + i)]) * w.values[size_t(r * k + i)]);
              }
              ASSERT_NEAR(y[size_t(t * n + r)], ref, 1e-5 * l1 + 1e-30)
                  << "token " << t << " row " << r;
            }
        }
}

// A token alone gets the bits it gets among 39 others (tokens in the first and second B tile of
// a block, and in a 16-token last block), at 1 and 3 threads.
TEST(AmxEmulated, BatchInvariant) {
  const int64_t m = 40, n = 197, k = 203;
  const auto w = bf16_weight(n, k, 7);
  const auto x = random_floats(size_t(m * k), 8);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3})
    for (bool split : {true, false}) {
      omp_set_num_threads(threads);
      const auto batch = emulated(x, m, w.view, 1, split);
      for (int64_t t = 0; t < m; ++t) {
        const std::vector<float> xt(x.begin() + t * k, x.begin() + (t + 1) * k);
        const auto one = emulated(xt, 1, w.view, 1, split);
        ASSERT_EQ(0, std::memcmp(one.data(), batch.data() + t * n, size_t(n) * 4))
            << "token " << t << " split " << split << " threads " << threads;
      }
    }
  omp_set_num_threads(saved);
}

// Chunked is each chunk's columns as a layer of its own, the sums added by the pairwise tree:
// what keeps the row-parallel layers bitwise alike at any tp.
TEST(AmxEmulated, ChunkedIsTheTreeOfTheChunksOwnLayers) {
  for (int64_t kc : {21, 64})
    for (int64_t chunks : {1, 2, 4, 8}) {
      const int64_t m = 18, n = 37, k = chunks * kc;
      const auto w = bf16_weight(n, k, uint32_t(kc + chunks));
      const auto x = random_floats(size_t(m * k), 9);
      const auto got = emulated(x, m, w.view, chunks, true);
      std::vector<std::vector<float>> sums;
      for (int64_t c = 0; c < chunks; ++c) {
        std::vector<float> xc;
        std::vector<uint16_t> wc;
        for (int64_t t = 0; t < m; ++t)
          xc.insert(xc.end(), x.begin() + t * k + c * kc, x.begin() + t * k + (c + 1) * kc);
        for (int64_t r = 0; r < n; ++r)
          wc.insert(wc.end(), w.bits.begin() + r * k + c * kc,
                    w.bits.begin() + r * k + (c + 1) * kc);
        sums.push_back(emulated(xc, m, WeightView{wc.data(), DType::BF16, n, kc}, 1, true));
      }
      for (int64_t stride = 1; stride < chunks; stride *= 2)
        for (int64_t i = 0; i + stride < chunks; i += 2 * stride)
          for (size_t e = 0; e < got.size(); ++e) sums[size_t(i)][e] += sums[size_t(i + stride)][e];
      EXPECT_EQ(0, std::memcmp(sums[0].data(), got.data(), got.size() * 4))
          << chunks << " chunks of " << kc;
    }
}

// On a CPU with AMX: the tile instructions agree with their emulation (cpu_has_amx_bf16 checks
// a few shapes before linear() uses them; these are more), and linear() chose them.
TEST(Amx, TilesAgreeWithTheEmulation) {
  if (!detail::cpu_has_amx_bf16()) GTEST_SKIP() << "no AMX-BF16 here (or the OS withholds it)";
  for (int64_t m : {1, 17, 64})
    for (int64_t chunks : {1, 8})
      for (bool split : {true, false}) {
        const int64_t n = 130, k = chunks * 88;
        const auto w = bf16_weight(n, k, uint32_t(m));
        const auto x = random_floats(size_t(m * k), 5);
        std::vector<float> tiles(size_t(m * n));
        detail::linear_amx(x.data(), m, w.view, chunks, split, tiles.data());
        const auto emu = emulated(x, m, w.view, chunks, split);
        for (size_t i = 0; i < emu.size(); ++i)
          ASSERT_NEAR(tiles[i], emu[i], 1e-5 * (1 + std::fabs(emu[i])))
              << "element " << i << " m " << m << " chunks " << chunks << " split " << split;
      }
}

}  // namespace
}  // namespace dsmath::cpu
