// CPU kernels: each optimized op against its plain reference on random inputs (odd sizes,
// every weight dtype, MHA and GQA, prefill with a past), plus hand-computed cases that pin
// the math itself (RoPE's rotate_half pairing, RMSNorm, silu).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "common/core/dtype.h"
#include "common/core/error.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/sampling.h"
#include "tests/support/random_floats.h"
#include "tests/unit/kernels/kernel_test_util.h"

namespace dsmath::cpu {
namespace {

using dsmath::testing::random_floats;
using test::isas;
using test::kDTypes;
using test::store;

TEST(RmsNorm, MatchesReference) {
  for (DType t : kDTypes)
    for (int64_t rows : {1, 3, 17})
      for (int64_t dim : {1, 7, 64, 4096}) {
        SCOPED_TRACE(cat(dtype_name(t), " rows ", rows, " dim ", dim));
        const auto x = random_floats(size_t(rows * dim), uint32_t(rows * dim), 3.0f);
        const auto gamma = store(random_floats(size_t(dim), 5, 2.0f), t);
        std::vector<float> y(x.size()), ref(x.size());
        rms_norm(x.data(), rows, dim, gamma.data(), t, 1e-6f, y.data());
        rms_norm_reference(x.data(), rows, dim, gamma.data(), t, 1e-6f, ref.data());
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref[i], 1e-5 * std::fabs(ref[i]) + 1e-30) << i;
      }
}

TEST(RmsNorm, HandComputed) {
  // mean(3^2, 4^2) = 12.5, rms = sqrt(12.5 + eps): y = x / rms * gamma.
  const float x[] = {3, 4};
  const float gamma[] = {1, 2};
  const float eps = 0.5f;  // large, so a missing or misplaced eps shows
  float y[2];
  rms_norm(x, 1, 2, gamma, DType::F32, eps, y);
  EXPECT_NEAR(y[0], 3 / std::sqrt(13.0), 1e-6);
  EXPECT_NEAR(y[1], 2 * 4 / std::sqrt(13.0), 1e-6);
}

TEST(Rope, InvFreqLikeHF) {
  // HF LlamaRotaryEmbedding for dim 128, base 10000: inv_freq[j] = 10000^(-2j/128).
  RopeTable table(128, 10000.0);
  ASSERT_EQ(table.inv_freq.size(), 64u);
  for (size_t j = 0; j < 64; ++j)
    EXPECT_NEAR(table.inv_freq[j], std::pow(10000.0, -2.0 * double(j) / 128), 2e-7 * 1.0) << j;
  EXPECT_EQ(table.inv_freq[0], 1.0f);
  EXPECT_FLOAT_EQ(table.inv_freq[32], 0.01f);
}

// head_dim 4, base 100: inv_freq = [1, 0.1]. rotate_half pairs (0, 2) and (1, 3); the
// interleaved layout would pair (0, 1) and (2, 3) and give different numbers.
TEST(Rope, HandComputedRotateHalfLayout) {
  RopeTable table(4, 100.0);
  const int32_t pos = 3;
  const double a0 = 3.0, a1 = 0.3;
  const double expect[] = {1 * std::cos(a0) - 3 * std::sin(a0), 2 * std::cos(a1) - 4 * std::sin(a1),
                           3 * std::cos(a0) + 1 * std::sin(a0),
                           4 * std::cos(a1) + 2 * std::sin(a1)};
  const double interleaved0 = 1 * std::cos(a0) - 2 * std::sin(a0);
  for (auto fn : {apply_rope, apply_rope_reference}) {
    float x[] = {1, 2, 3, 4};
    fn(x, 1, 1, &pos, table);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(x[i], expect[i], 1e-6) << i;
    EXPECT_GT(std::fabs(x[0] - interleaved0), 0.1);
  }
}

// HF divides the f32 position by the factor; with a factor of 7, multiplying by
// float(1/7) instead is off by an ulp at most positions, so compare bit for bit.
TEST(Rope, LinearScalingDividesPositions) {
  for (double factor : {2.0, 7.0}) {
    RopeTable plain(8, 10000.0), scaled(8, 10000.0, factor);
    for (int32_t p = 0; p < 3000; ++p) {
      auto x = random_floats(8, 3), y = x;
      const int32_t scaled_pos = int32_t(p * factor);
      apply_rope(x.data(), 1, 1, &p, plain);
      apply_rope(y.data(), 1, 1, &scaled_pos, scaled);
      ASSERT_EQ(x, y) << "factor " << factor << " position " << scaled_pos;
    }
  }
}

TEST(Rope, PositionZeroIsIdentity) {
  RopeTable table(16, 10000.0);
  auto x = random_floats(2 * 3 * 16, 4);
  const auto before = x;
  const int32_t pos[] = {0, 0};
  apply_rope(x.data(), 2, 3, pos, table);
  EXPECT_EQ(x, before);
}

TEST(Rope, MatchesReference) {
  for (int64_t d : {2, 64, 128})
    for (int64_t tokens : {1, 3, 17})
      for (int64_t heads : {1, 5}) {
        RopeTable table(d, 10000.0);
        std::vector<int32_t> pos(static_cast<size_t>(tokens));
        for (int64_t t = 0; t < tokens; ++t) pos[size_t(t)] = int32_t(t * 37 + 5);
        auto x = random_floats(size_t(tokens * heads * d), uint32_t(d + tokens + heads));
        auto ref = x;
        apply_rope(x.data(), tokens, heads, pos.data(), table);
        apply_rope_reference(ref.data(), tokens, heads, pos.data(), table);
        for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], ref[i], 1e-6) << i;
      }
}

TEST(Rope, RejectsOddHeadDimAndNegativePosition) {
  EXPECT_THROW(RopeTable(7, 10000.0), Error);
  RopeTable table(4, 10000.0);
  float x[4] = {};
  const int32_t pos = -1;
  EXPECT_THROW(apply_rope(x, 1, 1, &pos, table), Error);
}

struct AttnCase {
  int64_t q_len, kv_len, n_heads, n_kv_heads, head_dim, pad;
};

void check_attention(const AttnCase& c, uint32_t seed) {
  SCOPED_TRACE(cat("q_len ", c.q_len, " kv_len ", c.kv_len, " heads ", c.n_heads, "/", c.n_kv_heads,
                   " d ", c.head_dim, " pad ", c.pad));
  const int64_t stride = c.n_kv_heads * c.head_dim + c.pad;
  const AttentionShape s{c.q_len, c.kv_len, c.n_heads, c.n_kv_heads, c.head_dim, stride};
  // Scores of a few units: a peaked softmax, so the max shift matters.
  const auto q = random_floats(size_t(c.q_len * c.n_heads * c.head_dim), seed, 2.0f);
  const auto k = random_floats(size_t(c.kv_len * stride), seed + 1, 2.0f);
  const auto v = random_floats(size_t(c.kv_len * stride), seed + 2);
  std::vector<float> ref(q.size());
  causal_attention_reference(q.data(), k.data(), v.data(), s, ref.data());
  for (detail::Isa isa : isas()) {
    std::vector<float> out(q.size(), NAN);
    causal_attention_on(isa, q.data(), k.data(), v.data(), s, out.data());
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_NEAR(out[i], ref[i], 1e-5) << i << " isa " << int(isa);
  }
}

TEST(Attention, MatchesReferenceMhaAndGqa) {
  uint32_t seed = 100;
  for (auto [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}, {6, 1}})
    for (int64_t d : {8, 13, 16, 128})
      for (auto [q_len, kv_len] :
           {std::pair<int64_t, int64_t>{1, 1}, {1, 7}, {3, 3}, {5, 70}, {17, 17}, {2, 200}})
        for (int64_t pad : {0, 5})
          check_attention({q_len, kv_len, heads, kv_heads, d, pad}, ++seed);
}

// Work is split into (query, run of heads) by thread count; the result must not change
// with it, bit for bit (a run's output would otherwise depend on the machine it ran on).
TEST(Attention, SameBitsForAnyThreadCount) {
  const int saved = omp_get_max_threads();
  for (auto [q_len, kv_len] : {std::pair<int64_t, int64_t>{1, 150}, {3, 40}}) {
    const AttentionShape s{q_len, kv_len, 12, 4, 32, 4 * 32};
    const auto q = random_floats(size_t(q_len * 12 * 32), 51, 2.0f);
    const auto k = random_floats(size_t(kv_len * 4 * 32), 52, 2.0f);
    const auto v = random_floats(size_t(kv_len * 4 * 32), 53);
    std::vector<float> first, out(q.size()), ref(q.size());
    causal_attention_reference(q.data(), k.data(), v.data(), s, ref.data());
    for (detail::Isa isa : isas()) {
      first.clear();
      for (int threads : {1, 2, 3, 5, 16}) {
        omp_set_num_threads(threads);
        causal_attention_on(isa, q.data(), k.data(), v.data(), s, out.data());
        for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << threads;
        if (first.empty()) first = out;
        EXPECT_EQ(out, first) << "threads " << threads << " q_len " << q_len << " isa " << int(isa);
      }
    }
  }
  omp_set_num_threads(saved);
}

// A NaN in a query makes that (query, head)'s output NaN, on the blocked paths (d 16; d 8 takes
// the AVX2 one on an AVX-512 CPU) and the per-query one (d 13), rather than a finite average that
// would hide it; other heads stay finite.
TEST(Attention, NanInAQueryPropagatesToItsHeadOnly) {
  for (auto [d, isa] : [] {
         std::vector<std::pair<int64_t, detail::Isa>> cases;
         for (detail::Isa isa : isas())
           for (int64_t d : {16, 8, 13}) cases.emplace_back(d, isa);
         return cases;
       }()) {
    const int64_t q_len = 5, kv_len = 70, heads = 4, kv_heads = 2, stride = kv_heads * d;
    auto q = random_floats(size_t(q_len * heads * d), 41, 2.0f);
    const auto k = random_floats(size_t(kv_len * stride), 42, 2.0f);
    const auto v = random_floats(size_t(kv_len * stride), 43);
    q[size_t((2 * heads + 1) * d + 3)] = NAN;  // query 2, head 1
    std::vector<float> out(q.size());
    causal_attention_on(isa, q.data(), k.data(), v.data(),
                        {q_len, kv_len, heads, kv_heads, d, stride}, out.data());
    for (int64_t i = 0; i < q_len; ++i)
      for (int64_t h = 0; h < heads; ++h) {
        const bool poisoned = i == 2 && h == 1;
        for (int64_t c = 0; c < d; ++c)
          ASSERT_EQ(std::isnan(out[size_t((i * heads + h) * d + c)]), poisoned)
              << "d " << d << " query " << i << " head " << h << " isa " << int(isa);
      }
  }
}

TEST(Attention, SingleKeyReturnsItsValue) {
  const float q[] = {1, -2, 3, 0.5f}, k[] = {0.3f, 0.1f, -1, 2}, v[] = {5, 6, 7, 8};
  float out[4];
  causal_attention(q, k, v, {1, 1, 1, 1, 4, 4}, out);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(out[i], v[i]);
}

// Query i of a prefill sees exactly the keys up to its own position: the same bits as a
// decode step over the shorter cache, whatever the later keys hold and however the queries are
// grouped, on every instruction set (the blocked paths take eight at a time; 7 queries over 70
// past keys cross a 64-key chunk inside a block; d 8 takes the AVX2 blocked path on an AVX-512
// CPU, d 13 the per-query path).
TEST(Attention, CausalMaskMatchesShorterCacheBitForBit) {
  for (auto [q_len, past, d] : {std::tuple<int64_t, int64_t, int64_t>{4, 9, 16},
                                {7, 70, 16},
                                {9, 0, 32},
                                {5, 60, 13},
                                {11, 40, 8}})
    for (detail::Isa isa : isas()) {
      const int64_t heads = 4, kv_heads = 2, stride = kv_heads * d, kv_len = past + q_len;
      const auto q = random_floats(size_t(q_len * heads * d), 7, 2.0f);
      const auto k = random_floats(size_t(kv_len * stride), 8, 2.0f);
      const auto v = random_floats(size_t(kv_len * stride), 9);
      std::vector<float> full(q.size()), one(size_t(heads * d));
      causal_attention_on(isa, q.data(), k.data(), v.data(),
                          {q_len, kv_len, heads, kv_heads, d, stride}, full.data());
      for (int64_t i = 0; i < q_len; ++i) {
        causal_attention_on(isa, q.data() + i * heads * d, k.data(), v.data(),
                            {1, past + i + 1, heads, kv_heads, d, stride}, one.data());
        ASSERT_EQ(0, std::memcmp(one.data(), full.data() + i * heads * d, one.size() * 4))
            << "query " << i << " of " << q_len << " after " << past << ", d " << d << " isa "
            << int(isa);
      }
    }
}

TEST(Attention, RejectsBadShapes) {
  float buf[64] = {};
  EXPECT_THROW(causal_attention(buf, buf, buf, {2, 1, 1, 1, 4, 4}, buf), Error);  // kv < q
  EXPECT_THROW(causal_attention(buf, buf, buf, {1, 1, 3, 2, 4, 8}, buf), Error);  // 3 % 2
  EXPECT_THROW(causal_attention(buf, buf, buf, {1, 1, 2, 2, 4, 7}, buf), Error);  // stride
}

TEST(Activation, SiluMulMatchesReferenceAndHandValues) {
  for (int64_t n : {1, 7, 11008, 40000}) {
    const auto g = random_floats(size_t(n), uint32_t(n), 8.0f), u = random_floats(size_t(n), 2);
    std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
    silu_mul(g.data(), u.data(), n, out.data());
    silu_mul_reference(g.data(), u.data(), n, ref.data());
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-6 * std::fabs(ref[i]));
  }
  const float g[] = {1, 0, -2}, u[] = {2, 5, 1};
  float out[3];
  silu_mul(g, u, 3, out);
  EXPECT_NEAR(out[0], 2 / (1 + std::exp(-1.0)), 1e-6);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_NEAR(out[2], -2 / (1 + std::exp(2.0)), 1e-6);
}

TEST(Activation, SiluMulInPlace) {
  for (int64_t n : {5, 40000}) {
    auto g = random_floats(size_t(n), 3, 4.0f);
    const auto u = random_floats(size_t(n), 4);
    std::vector<float> expect(static_cast<size_t>(n));
    silu_mul(g.data(), u.data(), n, expect.data());
    silu_mul(g.data(), u.data(), n, g.data());
    EXPECT_EQ(g, expect);
  }
}

TEST(Activation, Add) {
  for (int64_t n : {3, 50000}) {
    auto x = random_floats(size_t(n), 1);
    const auto y = random_floats(size_t(n), 2), before = x;
    add(x.data(), y.data(), n);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], before[i] + y[i]);
  }
}

TEST(Embedding, LooksUpRowsInEveryDType) {
  const int64_t rows = 5, dim = 3;
  const auto table = random_floats(size_t(rows * dim), 4);
  for (DType t : kDTypes) {
    const auto bytes = store(table, t);
    const int32_t ids[] = {4, 0, 4, 2};
    std::vector<float> out(4 * dim);
    embedding_lookup({bytes.data(), t, rows, dim}, ids, 4, out.data());
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < dim; ++j)
        EXPECT_EQ(out[size_t(i * dim + j)], load_as_f32(bytes.data(), t, size_t(ids[i] * dim + j)));
  }
}

TEST(Embedding, OutOfRangeIdIsAClearError) {
  const std::vector<float> table(6, 1.0f);
  const WeightView w{table.data(), DType::F32, 3, 2};
  std::vector<float> out(4, -7.0f);
  for (int32_t bad : {3, -1, 102400}) {
    const int32_t ids[] = {0, bad};
    try {
      embedding_lookup(w, ids, 2, out.data());
      ADD_FAILURE() << "no error for id " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("3 rows"), std::string::npos) << msg;
    }
    EXPECT_EQ(out[0], -7.0f) << "nothing written before the ids are validated";
  }
}

}  // namespace
}  // namespace dsmath::cpu

// ---- sampling passes: every path against the plain reference --------------------------------

namespace dsmath::cpu {
namespace {

// Every instruction set's silu_mul is within 1e-6 of the reference (exp.h's polynomial), keeps
// the signs and zeros of SiLU, and gives each element the bits it gets alone: where it sits
// (a vector lane, the partial last vector, another thread's chunk) never matters.
TEST(Activation, SiluMulOnEveryInstructionSetIsPositionIndependent) {
  for (detail::Isa isa : isas()) {
    for (int64_t n : {1, 7, 8, 17, 33, 40000}) {
      const auto g = random_floats(size_t(n), uint32_t(n + 5), 12.0f);
      const auto u = random_floats(size_t(n), uint32_t(n + 6));
      std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
      silu_mul_on(isa, g.data(), u.data(), n, out.data());
      silu_mul_reference(g.data(), u.data(), n, ref.data());
      for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_NEAR(out[i], ref[i], 1e-6 * std::fabs(ref[i]) + 1e-30)
            << "isa " << int(isa) << ", n " << n << ", element " << i;
        float alone = 0;
        silu_mul_on(isa, &g[i], &u[i], 1, &alone);
        ASSERT_EQ(out[i], alone) << "isa " << int(isa) << ", n " << n << ", element " << i;
      }
    }
    const float g[] = {0.0f, -0.0f, 100.0f, -100.0f}, u[] = {3, 3, 1, 1};
    float out[4];
    silu_mul_on(isa, g, u, 4, out);
    EXPECT_EQ(out[0], 0.0f);
    EXPECT_EQ(out[1], 0.0f);
    EXPECT_EQ(out[2], 100.0f);
    EXPECT_LE(out[3], 0.0f);
    EXPECT_GT(out[3], -1e-30f);
  }
}

TEST(Sampling, ArgmaxFiniteMatchesReferenceIncludingTiesAndNonFinite) {
  for (int64_t n : {1, 7, 8, 15, 16, 17, 100, 1003}) {
    auto z = random_floats(size_t(n), uint32_t(n));
    for (float& v : z) v = std::round(v * 4);  // many ties
    for (detail::Isa isa : isas()) {
      const RowArgmax got = argmax_finite_on(isa, z.data(), n);
      const RowArgmax want = argmax_finite_reference(z.data(), n);
      EXPECT_EQ(got.index, want.index) << "n " << n << " isa " << int(isa);
      EXPECT_TRUE(got.finite);
      for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
        auto broken = z;
        broken[size_t(n / 2)] = bad;
        EXPECT_FALSE(argmax_finite_on(isa, broken.data(), n).finite)
            << "n " << n << " isa " << int(isa) << " value " << bad;
      }
    }
  }
}

TEST(Sampling, ExpShiftedMatchesReference) {
  for (int64_t n : {1, 9, 16, 33, 4099}) {
    auto z = random_floats(size_t(n), uint32_t(n) + 7);
    for (float& v : z) v *= 40;  // down to e^-80 and the clamp
    const float max = *std::max_element(z.begin(), z.end());
    for (float scale : {1.0f, 1.25f, 3.0f}) {
      std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      const double want_sum = exp_shifted_reference(z.data(), n, max, scale, want.data());
      for (detail::Isa isa : isas()) {
        const double sum = exp_shifted_on(isa, z.data(), n, max, scale, got.data());
        EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum) << "n " << n << " isa " << int(isa);
        double worst = 0;
        for (int64_t i = 0; i < n; ++i)
          worst = std::max(worst, std::abs(double(got[size_t(i)]) / want[size_t(i)] - 1));
        EXPECT_LT(worst, 5e-7) << "n " << n << " scale " << scale << " isa " << int(isa);
      }
    }
  }
}

TEST(Sampling, MaskKeptMatchesReference) {
  for (int64_t n : {1, 8, 17, 1000}) {
    auto p = random_floats(size_t(n), uint32_t(n) + 3);
    for (float& v : p) v = std::round(std::abs(v) * 8) / 8;  // ties at the cutoff
    for (float floor : {0.0f, 0.25f})
      for (int64_t cut_i : {int64_t(-1), int64_t(0), n / 2, n - 1}) {
        const float cut_p = cut_i < 0 ? -1.0f : p[size_t(cut_i)];
        std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
        const double want_sum = mask_kept_reference(p.data(), n, floor, cut_p, cut_i, want.data());
        for (detail::Isa isa : isas()) {
          const double sum = mask_kept_on(isa, p.data(), n, floor, cut_p, cut_i, got.data());
          EXPECT_EQ(got, want) << "n " << n << " cut " << cut_i << " isa " << int(isa);
          EXPECT_NEAR(sum, want_sum, 1e-5 * (1 + want_sum));
        }
      }
  }
}

}  // namespace
}  // namespace dsmath::cpu
