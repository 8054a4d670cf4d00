// Causal GQA attention of the q_len newest tokens against kv_len cached ones, f32 softmax
// with a running max (see attention.h).
#include "kernels/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <type_traits>
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

// HF transformers 4.40 (the goldens' version), eager attention: scores are divided by
// math.sqrt(head_dim), a Python float applied to f32 scores, i.e. by its f32 rounding.
float softmax_divisor(int64_t head_dim) {
  return float(std::sqrt(double(head_dim)));
}

}  // namespace

namespace {

// Attention of query i for heads [h0, h1). Keys are visited in chunks of kChunk, and within
// a chunk position by position across all the heads, so each K/V row is read as one
// contiguous run of (h1 - h0) / group head slices (a head-major walk would jump a whole
// row stride, typically 16 KiB, for every key, defeating the prefetchers). Per chunk:
// the scores, one rescale of each head's running accumulator by e^(old max - new max),
// then the exp-weighted values. Each head's arithmetic is the same whatever [h0, h1) is.
// always_inline: compiled once into an AVX2 wrapper and once into a portable one, so the
// plain loops below vectorize for whichever CPU runs them.
constexpr int64_t kChunk = 64;

struct HeadState {
  std::vector<float> acc, scores, run_max, run_sum;
};

// A cached element as f32: itself, or a bf16 (the top half of an f32) widened.
__attribute__((always_inline)) inline float widen(float v) {
  return v;
}
__attribute__((always_inline)) inline float widen(uint16_t bf16) {
  return std::bit_cast<float>(uint32_t(bf16) << 16);
}

// q . k row: dot_portable's order (8 partial sums), for f32 or bf16 rows alike.
template <typename T>
__attribute__((always_inline)) inline float dot(const float* a, const T* b, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return detail::dot_portable(a, b, n);
  } else {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * widen(b[i + j]);
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; ++i) s += a[i] * widen(b[i]);
    return s;
  }
}

// Where position t's K (V) row is: the only difference between the contiguous and the paged
// cache, so both run this one implementation of the math and give the same bits.
struct ContiguousRows {
  const float* base;
  int64_t stride;
  const float* row(int64_t t) const { return base + t * stride; }
};

template <typename T>  // float or uint16_t (bf16)
struct PagedRows {
  const T* base;  // [num_blocks][block_size][stride]
  const int32_t* table;
  int64_t block_size;
  int64_t stride;
  const T* row(int64_t t) const {
    return base + (int64_t(table[t / block_size]) * block_size + t % block_size) * stride;
  }
};

template <typename Rows>
__attribute__((always_inline)) inline void attend(const float* q, const Rows& k, const Rows& v,
                                                  const AttentionShape& s, float divisor, int64_t i,
                                                  int64_t h0, int64_t h1, HeadState& st,
                                                  float* out) {
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads, nh = h1 - h0;
  const int64_t n_keys = s.kv_len - s.q_len + i + 1;
  float* acc = st.acc.data();
  float* scores = st.scores.data();  // [nh][kChunk]
  std::fill(acc, acc + nh * d, 0.0f);
  std::fill(st.run_max.begin(), st.run_max.begin() + nh, -std::numeric_limits<float>::infinity());
  std::fill(st.run_sum.begin(), st.run_sum.begin() + nh, 0.0f);
  const float* qi = q + (i * s.n_heads + h0) * d;
  for (int64_t t0 = 0; t0 < n_keys; t0 += kChunk) {
    const int64_t len = std::min(kChunk, n_keys - t0);
    for (int64_t j = 0; j < len; ++j) {
      const auto* krow = k.row(t0 + j);
      for (int64_t h = 0; h < nh; ++h)
        scores[h * kChunk + j] = dot(qi + h * d, krow + (h0 + h) / group * d, d) / divisor;
    }
    for (int64_t h = 0; h < nh; ++h) {
      float* sc = scores + h * kChunk;
      float chunk_max = sc[0];
      for (int64_t j = 1; j < len; ++j) chunk_max = std::max(chunk_max, sc[j]);
      if (chunk_max > st.run_max[size_t(h)]) {
        const float correction = std::exp(st.run_max[size_t(h)] - chunk_max);  // 0 at first
        st.run_sum[size_t(h)] *= correction;
        for (int64_t c = 0; c < d; ++c) acc[h * d + c] *= correction;
        st.run_max[size_t(h)] = chunk_max;
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < len; ++j) sum += (sc[j] = std::exp(sc[j] - st.run_max[size_t(h)]));
      st.run_sum[size_t(h)] += sum;
    }
    for (int64_t j = 0; j < len; ++j) {
      const auto* vrow = v.row(t0 + j);
      for (int64_t h = 0; h < nh; ++h) {
        const float p = scores[h * kChunk + j];
        const auto* vv = vrow + (h0 + h) / group * d;
        float* a = acc + h * d;
        for (int64_t c = 0; c < d; ++c) a[c] += p * widen(vv[c]);
      }
    }
  }
  for (int64_t h = 0; h < nh; ++h) {
    float* o = out + (i * s.n_heads + h0 + h) * d;
    const float inv = 1.0f / st.run_sum[size_t(h)];
    for (int64_t c = 0; c < d; ++c) o[c] = acc[h * d + c] * inv;
  }
}

#if DSMATH_HAVE_X86_SIMD
template <typename Rows>
DSMATH_AVX2 void attend_avx2(const float* q, const Rows& k, const Rows& v, const AttentionShape& s,
                             float divisor, int64_t i, int64_t h0, int64_t h1, HeadState& st,
                             float* out) {
  attend(q, k, v, s, divisor, i, h0, h1, st, out);
}
#endif

template <typename Rows>
void attend_portable(const float* q, const Rows& k, const Rows& v, const AttentionShape& s,
                     float divisor, int64_t i, int64_t h0, int64_t h1, HeadState& st, float* out) {
  attend(q, k, v, s, divisor, i, h0, h1, st, out);
}

template <typename Rows>
void run_attention(const float* q, const Rows& k, const Rows& v, const AttentionShape& s,
                   float* out) {
  if (s.q_len == 0) return;
  const float divisor = softmax_divisor(s.head_dim);
  [[maybe_unused]] const bool simd = detail::cpu_has_avx2();
  // Tasks are (query, run of heads): whole rows of heads when there are enough queries to
  // keep every core busy (prefill), a few heads each when there are not (decode).
  const int64_t threads = omp_get_max_threads();
  const int64_t splits = std::clamp<int64_t>((2 * threads + s.q_len - 1) / s.q_len, 1, s.n_heads);
  const int64_t per = (s.n_heads + splits - 1) / splits;
  const int64_t tasks_per_query = (s.n_heads + per - 1) / per;
#pragma omp parallel if (s.q_len * tasks_per_query > 1)
  {
    HeadState st;
    st.acc.resize(size_t(per * s.head_dim));
    st.scores.resize(size_t(per * kChunk));
    st.run_max.resize(size_t(per));
    st.run_sum.resize(size_t(per));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < s.q_len * tasks_per_query; ++task) {
      const int64_t i = task / tasks_per_query;
      const int64_t h0 = task % tasks_per_query * per, h1 = std::min(s.n_heads, h0 + per);
#if DSMATH_HAVE_X86_SIMD
      if (simd) {
        attend_avx2(q, k, v, s, divisor, i, h0, h1, st, out);
        continue;
      }
#endif
      attend_portable(q, k, v, s, divisor, i, h0, h1, st, out);
    }
  }
}

}  // namespace

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s,
                      float* out) {
  check(s);
  run_attention(q, ContiguousRows{k, s.kv_row_stride}, ContiguousRows{v, s.kv_row_stride}, s, out);
}

namespace {
template <typename T>
void run_paged(const float* q, const T* k_blocks, const T* v_blocks, const int32_t* block_table,
               int64_t block_size, const AttentionShape& s, float* out) {
  check(s);
  DSMATH_CHECK(block_size > 0, "paged attention: block_size ", block_size, " must be positive");
  DSMATH_CHECK(block_table != nullptr || s.kv_len == 0, "paged attention: no block table for ",
               s.kv_len, " cached positions");
  run_attention(q, PagedRows<T>{k_blocks, block_table, block_size, s.kv_row_stride},
                PagedRows<T>{v_blocks, block_table, block_size, s.kv_row_stride}, s, out);
}
}  // namespace

void causal_attention_paged(const float* q, const float* k_blocks, const float* v_blocks,
                            const int32_t* block_table, int64_t block_size, const AttentionShape& s,
                            float* out) {
  run_paged(q, k_blocks, v_blocks, block_table, block_size, s, out);
}

void causal_attention_paged(const float* q, const uint16_t* k_blocks_bf16,
                            const uint16_t* v_blocks_bf16, const int32_t* block_table,
                            int64_t block_size, const AttentionShape& s, float* out) {
  run_paged(q, k_blocks_bf16, v_blocks_bf16, block_table, block_size, s, out);
}

void causal_attention_reference(const float* q, const float* k, const float* v,
                                const AttentionShape& s, float* out) {
  check(s);
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads;
  const double divisor = std::sqrt(double(d));
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
        w[size_t(t)] = dot / divisor;
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
