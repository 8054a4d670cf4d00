// Causal GQA attention of the q_len newest tokens against kv_len cached ones, f32 softmax
// with a running max (see attention.h).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

namespace {

void check(const AttentionShape& s) {
  DSMATH_CHECK(s.q_len >= 0 && s.head_dim > 0 && s.n_heads > 0 && s.n_kv_heads > 0,
               "attention: bad shape q_len=", s.q_len, " n_heads=", s.n_heads,
               " n_kv_heads=", s.n_kv_heads, " head_dim=", s.head_dim);
  DSMATH_CHECK(s.kv_len >= s.q_len, "attention: kv_len ", s.kv_len, " < q_len ", s.q_len,
               " (the queries' own keys must be in the cache)");
  DSMATH_CHECK(s.n_heads % s.n_kv_heads == 0, "attention: n_heads ", s.n_heads,
               " is not a multiple of n_kv_heads ", s.n_kv_heads);
  DSMATH_CHECK(s.kv_row_stride >= s.n_kv_heads * s.head_dim, "attention: kv_row_stride ",
               s.kv_row_stride, " < n_kv_heads * head_dim = ", s.n_kv_heads * s.head_dim);
}

// HF: scaling = head_dim ** -0.5 as a Python float, applied to f32 scores.
float softmax_scale(int64_t head_dim) {
  return float(1.0 / std::sqrt(double(head_dim)));
}

}  // namespace

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s,
                      float* out) {
  check(s);
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const float scale = softmax_scale(d);
  const bool simd = detail::cpu_has_avx2();
  // Keys are visited in chunks: scores of a chunk first, then one rescale of the running
  // accumulator per chunk instead of one per key.
  constexpr int64_t kChunk = 64;
#pragma omp parallel if (s.q_len * s.n_heads > 1)
  {
    std::vector<float> acc(static_cast<size_t>(d));
    float scores[kChunk];
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t i = 0; i < s.q_len; ++i) {
      for (int64_t h = 0; h < s.n_heads; ++h) {
        const float* qv = q + (i * s.n_heads + h) * d;
        const int64_t g = h / group;
        const int64_t n_keys = s.kv_len - s.q_len + i + 1;
        float run_max = -std::numeric_limits<float>::infinity();
        float run_sum = 0.0f;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t t0 = 0; t0 < n_keys; t0 += kChunk) {
          const int64_t len = std::min(kChunk, n_keys - t0);
          float chunk_max = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < len; ++j) {
            const float* kv = k + (t0 + j) * s.kv_row_stride + g * d;
#if DSMATH_HAVE_X86_SIMD
            const float dot = simd ? detail::dot_avx2(qv, kv, d) : detail::dot_portable(qv, kv, d);
#else
            const float dot = detail::dot_portable(qv, kv, d);
#endif
            scores[j] = dot * scale;
            chunk_max = std::max(chunk_max, scores[j]);
          }
          if (chunk_max > run_max) {
            const float correction = std::exp(run_max - chunk_max);  // 0 on the first chunk
            run_sum *= correction;
            for (int64_t c = 0; c < d; ++c) acc[size_t(c)] *= correction;
            run_max = chunk_max;
          }
          for (int64_t j = 0; j < len; ++j) {
            const float p = std::exp(scores[j] - run_max);
            run_sum += p;
            const float* vv = v + (t0 + j) * s.kv_row_stride + g * d;
            for (int64_t c = 0; c < d; ++c) acc[size_t(c)] += p * vv[c];
          }
        }
        float* o = out + (i * s.n_heads + h) * d;
        const float inv = 1.0f / run_sum;
        for (int64_t c = 0; c < d; ++c) o[c] = acc[size_t(c)] * inv;
      }
    }
  }
}

void causal_attention_reference(const float* q, const float* k, const float* v,
                                const AttentionShape& s, float* out) {
  check(s);
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> w(size_t(s.kv_len));
  for (int64_t i = 0; i < s.q_len; ++i) {
    const int64_t n_keys = s.kv_len - s.q_len + i + 1;
    for (int64_t h = 0; h < s.n_heads; ++h) {
      const int64_t g = h / group;
      const float* qv = q + (i * s.n_heads + h) * d;
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < n_keys; ++t) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += double(qv[c]) * k[t * s.kv_row_stride + g * d + c];
        w[size_t(t)] = dot * scale;
        mx = std::max(mx, w[size_t(t)]);
      }
      double sum = 0;
      for (int64_t t = 0; t < n_keys; ++t) sum += (w[size_t(t)] = std::exp(w[size_t(t)] - mx));
      for (int64_t c = 0; c < d; ++c) {
        double o = 0;
        for (int64_t t = 0; t < n_keys; ++t) o += w[size_t(t)] * v[t * s.kv_row_stride + g * d + c];
        out[(i * s.n_heads + h) * d + c] = float(o / sum);
      }
    }
  }
}

}  // namespace dsmath::cpu
