// linear(): every code path this CPU has against the reference (odd shapes, every weight dtype,
// model widths, uneven thread splits), batch invariance and the chunk tree bit for bit, the
// path linear() chooses against what /proc/cpuinfo says, and hand-computed values.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/core/dtype.h"
#include "common/core/error.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_bf16.h"
#include "tests/support/random_floats.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace dsmath::cpu {
namespace {

using dsmath::testing::random_floats;
using test::kDTypes;
using test::store;

// Every linear() code path this CPU can run (the portable one always).
std::vector<LinearPath> paths() {
  std::vector<LinearPath> out;
  for (LinearPath p : {LinearPath::Portable, LinearPath::Avx2, LinearPath::Avx512,
                       LinearPath::Avx512Bf16, LinearPath::Amx})
    if (linear_path_supported(p)) out.push_back(p);
  return out;
}

const char* path_name(LinearPath p) {
  return linear_path_name(p);
}

struct LinearCase {
  DType dtype;
  int64_t m, n, k;
};

std::string name_of(const LinearCase& c) {
  return cat(dtype_name(c.dtype), "_m", c.m, "_n", c.n, "_k", c.k);
}

// Checks fn against linear_reference. The bound is relative to sum_k |x w| (the size of
// the terms being summed), the natural scale of f32 summation error.
void check_linear(LinearPath path, const LinearCase& c, uint32_t seed) {
  SCOPED_TRACE(cat(path_name(path), " ", name_of(c)));
  const auto x = random_floats(size_t(c.m * c.k), seed);
  const auto wf = random_floats(size_t(c.n * c.k), seed + 1);
  const auto wb = store(wf, c.dtype);
  const WeightView w{wb.data(), c.dtype, c.n, c.k};
  std::vector<float> y(size_t(c.m * c.n), NAN), ref(size_t(c.m * c.n));
  linear_on_path(path, x.data(), c.m, w, y.data());
  linear_reference(x.data(), c.m, w, ref.data());
  for (int64_t t = 0; t < c.m; ++t) {
    for (int64_t n = 0; n < c.n; ++n) {
      double l1 = 0;
      for (int64_t k = 0; k < c.k; ++k)
        l1 += std::fabs(double(x[size_t(t * c.k + k)]) *
                        load_as_f32(wb.data(), c.dtype, size_t(n * c.k + k)));
      const size_t i = size_t(t * c.n + n);
      ASSERT_NEAR(y[i], ref[i], 1e-5 * l1 + 1e-30) << "token " << t << " row " << n;
    }
  }
}

// What /proc/cpuinfo says this CPU can run: an oracle independent of the kernels' own CPUID
// checks. Empty when there is no /proc/cpuinfo.
std::set<std::string> cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      return {std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
    }
  return {};
}

bool cpuinfo_supports(const std::set<std::string>& flags, LinearPath p) {
  const bool avx2 = flags.count("avx2") && flags.count("fma") && flags.count("f16c");
  if (p == LinearPath::Avx2) return avx2;
  if (p == LinearPath::Avx512) return avx2 && flags.count("avx512f");
  const bool bf16 = avx2 && flags.count("avx512f") && flags.count("avx512bw") &&
                    flags.count("avx512vl") && flags.count("avx512_bf16");
  if (p == LinearPath::Avx512Bf16) return bf16;
  if (p == LinearPath::Amx) return bf16 && flags.count("amx_tile") && flags.count("amx_bf16");
  return true;
}

TEST(Linear, DetectsThePathsThisCpuHas) {
  const auto flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags to compare with";
  for (LinearPath p : {LinearPath::Portable, LinearPath::Avx2, LinearPath::Avx512,
                       LinearPath::Avx512Bf16, LinearPath::Amx})
    EXPECT_EQ(linear_path_supported(p), cpuinfo_supports(flags, p)) << path_name(p);
  std::cout << "linear paths on this CPU:";
  for (LinearPath p : paths()) std::cout << " " << path_name(p);
  std::cout << "; linear() uses " << path_name(linear_best_path()) << "\n";
}

// m covers every token-block remainder of the SIMD paths (blocks of 4 and of 6); n and k
// cover row-block and vector-width remainders.
TEST(Linear, MatchesReferenceAllDTypesAndOddShapes) {
  uint32_t seed = 1;
  for (LinearPath path : paths())
    for (DType t : kDTypes)
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 17})
        for (int64_t n : {1, 3, 5, 8, 25, 67})
          for (int64_t k : {1, 7, 8, 9, 16, 17, 31, 33, 64, 257})
            check_linear(path, {t, m, n, k}, ++seed);
}

// A layer of no input columns (k 0) gives zeros on every path, whether or not its view points at
// any rows, and there is nothing to pack for it.
TEST(Linear, NoColumnsGivesZeros) {
  const std::vector<float> x(2, 1.0f);
  const WeightView w{nullptr, DType::BF16, 5, 0};
  for (LinearPath path : paths()) {
    std::vector<float> y(10, NAN);
    linear_on_path(path, x.data(), 2, w, y.data());
    for (float v : y) ASSERT_EQ(v, 0.0f) << path_name(path);
  }
  EXPECT_EQ(pack_for_linear(w), nullptr);
}

// linear() runs the most capable path /proc/cpuinfo allows (DSMATH_KERNELS_ISA may cap it).
TEST(Linear, LinearUsesTheBestPath) {
  const auto flags = cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags to compare with";
  LinearPath want = cpuinfo_supports(flags, LinearPath::Amx)          ? LinearPath::Amx
                    : cpuinfo_supports(flags, LinearPath::Avx512Bf16) ? LinearPath::Avx512Bf16
                    : cpuinfo_supports(flags, LinearPath::Avx512)     ? LinearPath::Avx512
                    : cpuinfo_supports(flags, LinearPath::Avx2)       ? LinearPath::Avx2
                                                                      : LinearPath::Portable;
  if (const char* cap = std::getenv("DSMATH_KERNELS_ISA")) {
    if (std::string(cap) == "portable") want = LinearPath::Portable;
    if (std::string(cap) == "avx2" && want >= LinearPath::Avx512) want = LinearPath::Avx2;
    if (std::string(cap) == "avx512" && want >= LinearPath::Avx512Bf16) want = LinearPath::Avx512;
    if (std::string(cap) == "avx512_bf16" && want == LinearPath::Amx) want = LinearPath::Avx512Bf16;
  }
  EXPECT_EQ(path_name(linear_best_path()), std::string(path_name(want)));
  for (DType t : kDTypes) {
    const int64_t m = 5, n = 29, k = 133;
    const auto x = random_floats(size_t(m * k), 41);
    const auto wb = store(random_floats(size_t(n * k), 42), t);
    const WeightView w{wb.data(), t, n, k};
    std::vector<float> a(size_t(m * n)), b(size_t(m * n));
    linear(x.data(), m, w, a.data());
    linear_on_path(want, x.data(), m, w, b.data());
    EXPECT_EQ(a, b) << dtype_name(t);
  }
}

TEST(Linear, MatchesReferenceAtModelWidth) {
  for (LinearPath path : paths())
    for (DType t : kDTypes) {
      check_linear(path, {t, 1, 96, 4096}, 11);
      check_linear(path, {t, 16, 40, 11008}, 12);
    }
}

// Unequal row ranges per thread (the last one takes the remainder) and more threads than
// row blocks.
TEST(Linear, MatchesReferenceWithUnevenThreadSplits) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 3, 7}) {
    omp_set_num_threads(threads);
    for (LinearPath path : paths())
      for (DType t : kDTypes) {
        check_linear(path, {t, 5, 1027, 33}, 21);
        check_linear(path, {t, 2, 6, 16}, 22);
      }
  }
  omp_set_num_threads(saved);
}

// A token's output must not depend on the other tokens in the batch (seeded sampling is
// reproducible whatever else the engine batches with it): bitwise equal to m = 1.
TEST(Linear, BatchInvariant) {
  for (LinearPath path : paths()) {
    for (DType t : kDTypes) {
      // n: three 64-row panels and a ragged end of one register and five rows.
      const int64_t m = 17, n = 197, k = 203;
      const auto x = random_floats(size_t(m * k), 31);
      const auto wb = store(random_floats(size_t(n * k), 32), t);
      const WeightView w{wb.data(), t, n, k};
      std::vector<float> batch(size_t(m * n)), one(static_cast<size_t>(n));
      linear_on_path(path, x.data(), m, w, batch.data());
      for (int64_t i = 0; i < m; ++i) {
        linear_on_path(path, x.data() + i * k, 1, w, one.data());
        ASSERT_EQ(0, std::memcmp(one.data(), batch.data() + i * n, size_t(n) * 4))
            << path_name(path) << " " << dtype_name(t) << " token " << i;
      }
    }
  }
}

// linear_chunked is bit for bit: each chunk's columns as a layer of its own through linear(),
// then the chunk sums added by the pairwise tree ((c0 + c1) + (c2 + c3)) + ... That is what
// lets the row-parallel layers give the same sums at any tp. Odd widths exercise the tails.
TEST(Linear, ChunkedIsTheTreeOfTheChunksOwnLayers) {
  for (LinearPath path : paths()) {
    for (DType t : kDTypes) {
      for (int64_t chunks : {1, 2, 4, 8}) {
        const int64_t m = 7, n = 29, kc = 21, k = chunks * kc;
        const auto x = random_floats(size_t(m * k), 51);
        const auto wf = random_floats(size_t(n * k), 52);
        const auto wb = store(wf, t);
        std::vector<float> got(size_t(m * n), NAN);
        linear_chunked_on_path(path, x.data(), m, WeightView{wb.data(), t, n, k}, chunks,
                               got.data());
        std::vector<std::vector<float>> sums;  // per chunk, [m][n]
        for (int64_t c = 0; c < chunks; ++c) {
          std::vector<float> xc, wc;  // the chunk's columns, contiguous
          for (int64_t i = 0; i < m; ++i)
            xc.insert(xc.end(), x.begin() + i * k + c * kc, x.begin() + i * k + (c + 1) * kc);
          for (int64_t r = 0; r < n; ++r)
            wc.insert(wc.end(), wf.begin() + r * k + c * kc, wf.begin() + r * k + (c + 1) * kc);
          const auto wcb = store(wc, t);
          sums.emplace_back(size_t(m * n));
          linear_on_path(path, xc.data(), m, WeightView{wcb.data(), t, n, kc}, sums.back().data());
        }
        for (int64_t stride = 1; stride < chunks; stride *= 2)
          for (int64_t i = 0; i + stride < chunks; i += 2 * stride)
            for (size_t j = 0; j < size_t(m * n); ++j)
              sums[size_t(i)][j] += sums[size_t(i + stride)][j];
        ASSERT_EQ(0, std::memcmp(sums[0].data(), got.data(), got.size() * 4))
            << path_name(path) << " " << dtype_name(t) << " in " << chunks << " chunks";
      }
    }
  }
}

// --matmul-precision medium: x rounded to one bf16 on the AVX512-BF16 path. Still batch-
// invariant and still the tree of the chunks' own layers; within bf16 rounding of the reference.
TEST(Linear, MediumPrecisionKeepsTheInvariantsWithinBf16Rounding) {
  if (!linear_path_supported(LinearPath::Avx512Bf16)) GTEST_SKIP() << "no AVX512-BF16 here";
  set_matmul_precision(MatmulPrecision::Medium);
  const int64_t m = 9, n = 37, chunks = 4, kc = 45, k = chunks * kc;
  const auto x = random_floats(size_t(m * k), 61);
  const auto wf = random_floats(size_t(n * k), 62);
  const auto wb = store(wf, DType::BF16);
  const WeightView w{wb.data(), DType::BF16, n, k};
  std::vector<float> got(size_t(m * n)), one(static_cast<size_t>(n)), ref(size_t(m * n)),
      high(size_t(m * n));
  linear_chunked_on_path(LinearPath::Avx512Bf16, x.data(), m, w, chunks, got.data());
  for (int64_t i = 0; i < m; ++i) {
    linear_chunked_on_path(LinearPath::Avx512Bf16, x.data() + i * k, 1, w, chunks, one.data());
    EXPECT_EQ(0, std::memcmp(one.data(), got.data() + i * n, size_t(n) * 4)) << "token " << i;
  }
  std::vector<float> xr(x.size());  // what medium multiplies by: x rounded to bf16
  for (size_t i = 0; i < x.size(); ++i) xr[i] = bf16_to_f32(f32_to_bf16(x[i]));
  linear_reference(xr.data(), m, w, ref.data());
  set_matmul_precision(MatmulPrecision::Highest);
  linear_chunked_on_path(LinearPath::Avx512Bf16, x.data(), m, w, chunks, high.data());
  double worst = 0, moved = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, double(std::fabs(got[i] - ref[i])));
    moved = std::max(moved, double(std::fabs(got[i] - high[i])));
  }
  EXPECT_LT(worst, 1e-4);  // the rounded product, summed in f32
  EXPECT_GT(moved, 0.0) << "medium rounded nothing: is it really bf16?";
}

// The AVX512-BF16 path reads the load-time dot-pair panels (pack_for_linear) when a view has
// them and packs each panel per call when not: the same bits either way, for every remainder of
// rows (panels of 64, registers of 16), columns (pairs, 32-column packing blocks), tokens (blocks
// of 6), both precisions, and chunks: panels packed for the call's chunks (then the rows are not
// needed), and one-chunk panels, which serve chunks of even width (odd ones pack per call).
TEST(Linear, PackedPanelsGiveTheBitsOfTheRows) {
  if (!linear_path_supported(LinearPath::Avx512Bf16)) GTEST_SKIP() << "no AVX512-BF16 here";
  uint32_t seed = 70;
  for (MatmulPrecision precision : {MatmulPrecision::Highest, MatmulPrecision::Medium}) {
    set_matmul_precision(precision);
    for (int64_t m : {1, 5, 6, 7, 13})
      for (int64_t n : {1, 15, 17, 64, 65, 130})
        for (int64_t k : {1, 2, 31, 33, 64, 100}) {
          const auto x = random_floats(size_t(m * k), ++seed);
          const auto wb = store(random_floats(size_t(n * k), ++seed), DType::BF16);
          const WeightView rows{wb.data(), DType::BF16, n, k};
          const auto one_chunk = detail::pack_bf16_panels(rows, 1);
          for (int64_t chunks : {1, 2, 4}) {
            if (k % chunks != 0) continue;
            const auto own = detail::pack_bf16_panels(rows, chunks);
            const WeightView views[] = {{rows.data, DType::BF16, n, k, one_chunk.get()},
                                        {nullptr, DType::BF16, n, k, own.get()}};
            std::vector<float> want(size_t(m * n), NAN);
            linear_chunked_on_path(LinearPath::Avx512Bf16, x.data(), m, rows, chunks, want.data());
            for (const WeightView& w : views) {
              std::vector<float> got(size_t(m * n), NAN);
              linear_chunked_on_path(LinearPath::Avx512Bf16, x.data(), m, w, chunks, got.data());
              ASSERT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * 4))
                  << "m " << m << " n " << n << " k " << k << " chunks " << chunks
                  << (w.data ? " (one-chunk panels)" : " (own panels, no rows)")
                  << (precision == MatmulPrecision::Medium ? " medium" : " highest");
            }
          }
        }
  }
  set_matmul_precision(MatmulPrecision::Highest);
}

TEST(Linear, HandComputed) {
  // W = [[1, 2], [3, -4], [0.5, 0.25]] in bf16 (all exact), x = [[1, 1], [2, -1]].
  const auto wb = store({1, 2, 3, -4, 0.5f, 0.25f}, DType::BF16);
  const float x[] = {1, 1, 2, -1};
  float y[6];
  linear(x, 2, {wb.data(), DType::BF16, 3, 2}, y);
  const float expect[] = {3, -1, 0.75f, 0, 10, 0.75f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], expect[i]) << i;
}

}  // namespace
}  // namespace dsmath::cpu
