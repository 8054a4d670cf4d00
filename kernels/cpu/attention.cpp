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
#include "kernels/cpu/exp.h"
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

// Per-thread scratch grows to n and never shrinks: no allocation per call once warm.
inline void grow(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
}

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
// The AVX2 path (head_dim a multiple of 8): a task is a block of up to kQueryBlock consecutive
// queries and a run of heads, so each K and V row is read once for the block rather than once
// per query (prefill was bound by re-reading the cache). Per (query, head) the arithmetic is
// fixed, whatever the block, the run of heads or the thread count:
//   score_t = hsum(8 lanes, each an fma chain over d) / divisor
//   per chunk of kChunk keys: m' = max(m, chunk max); if m' > m: acc, sum *= e^(m - m')
//     p_t = e^(score_t - m') (exp_avx2); sum += hsum(lanes of the p_t)
//     acc = fma(p_t, v_t, acc) in key order
//   out = acc * (1 / sum)
// so a prefill query gets the bits of the same query decoded alone.
constexpr int64_t kQueryBlock = 8;  // 4: 1.3x the time of 8 at 512 tokens; 16: no faster

template <typename T>
DSMATH_AVX2 inline __m256 load8(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm256_loadu_ps(p);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// out[u * out_stride + j] = q_u . k_j / divisor for NQ queries (q_stride apart) and NK keys:
// NQ x NK independent chains, each k vector loaded once for NQ queries.
template <int NQ, int NK, typename T>
DSMATH_AVX2 inline void dots(const float* q, int64_t q_stride, const T* const* k, int64_t d,
                             float divisor, float* out, int64_t out_stride) {
  __m256 a[NQ][NK];
  for (int u = 0; u < NQ; ++u)
    for (int j = 0; j < NK; ++j) a[u][j] = _mm256_setzero_ps();
  for (int64_t c = 0; c < d; c += 8) {
    __m256 kv[NK];
    for (int j = 0; j < NK; ++j) kv[j] = load8(k[j] + c);
    for (int u = 0; u < NQ; ++u) {
      const __m256 qv = _mm256_loadu_ps(q + u * q_stride + c);
      for (int j = 0; j < NK; ++j) a[u][j] = _mm256_fmadd_ps(qv, kv[j], a[u][j]);
    }
  }
  for (int u = 0; u < NQ; ++u)
    for (int j = 0; j < NK; ++j) out[u * out_stride + j] = detail::hsum(a[u][j]) / divisor;
}

// dots<nq, 1> for a run-time nq in 1..kQueryBlock.
template <typename T>
DSMATH_AVX2 inline void dots_one_key(int64_t nq, const float* q, int64_t q_stride, const T* k,
                                     int64_t d, float divisor, float* out, int64_t out_stride) {
  const T* keys[1] = {k};
  switch (nq) {
    case 1:
      return dots<1, 1>(q, q_stride, keys, d, divisor, out, out_stride);
    case 2:
      return dots<2, 1>(q, q_stride, keys, d, divisor, out, out_stride);
    case 3:
      return dots<3, 1>(q, q_stride, keys, d, divisor, out, out_stride);
    default:
      return dots<4, 1>(q, q_stride, keys, d, divisor, out, out_stride);
  }
}

// acc_u[0, 8 NV) += sum_j p_u[j] v_j[0, 8 NV) for NQ (1 or 2) queries, in j order; query u
// takes keys [0, len[u]) (len nondecreasing: later queries see more keys).
template <int NQ, int NV, class VRow>
DSMATH_AVX2 inline void weighted_values(const VRow& vrow, const float* p, int64_t p_stride,
                                        const int64_t* len, float* acc, int64_t acc_stride) {
  __m256 a[NQ][NV];
  for (int u = 0; u < NQ; ++u)
    for (int c = 0; c < NV; ++c) a[u][c] = _mm256_loadu_ps(acc + u * acc_stride + 8 * c);
  int64_t j = 0;
  for (; j < len[0]; ++j) {  // keys every query sees
    const auto* v = vrow(j);
    __m256 vv[NV];
    for (int c = 0; c < NV; ++c) vv[c] = load8(v + 8 * c);
    for (int u = 0; u < NQ; ++u) {
      const __m256 pu = _mm256_broadcast_ss(p + u * p_stride + j);
      for (int c = 0; c < NV; ++c) a[u][c] = _mm256_fmadd_ps(pu, vv[c], a[u][c]);
    }
  }
  for (; j < len[NQ - 1]; ++j) {  // the causal edge: keys only the last query sees
    const auto* v = vrow(j);
    const __m256 pu = _mm256_broadcast_ss(p + (NQ - 1) * p_stride + j);
    for (int c = 0; c < NV; ++c) a[NQ - 1][c] = _mm256_fmadd_ps(pu, load8(v + 8 * c), a[NQ - 1][c]);
  }
  for (int u = 0; u < NQ; ++u)
    for (int c = 0; c < NV; ++c) _mm256_storeu_ps(acc + u * acc_stride + 8 * c, a[u][c]);
}

struct BlockState {  // per thread, grown and never shrunk: no allocation per call once warm
  std::vector<float> acc, scores, run_max, run_sum;
  void reserve(int64_t nq, int64_t nh, int64_t d) {
    grow(acc, nq * nh * d);
    grow(scores, nq * nh * kChunk);
    grow(run_max, nq * nh);
    grow(run_sum, nq * nh);
  }
};

// Queries [i0, i0 + nq), heads [h0, h1).
template <typename Rows>
DSMATH_AVX2 void attend_block_avx2(const float* q, const Rows& k, const Rows& v,
                                   const AttentionShape& s, float divisor, int64_t i0, int64_t nq,
                                   int64_t h0, int64_t h1, BlockState& st, float* out) {
  const int64_t d = s.head_dim, group = s.n_heads / s.n_kv_heads, nh = h1 - h0;
  const int64_t q_stride = s.n_heads * d;                 // between consecutive queries
  using Elem = std::remove_cvref_t<decltype(*k.row(0))>;  // float, or uint16_t (bf16)
  int64_t n_keys[kQueryBlock], len[kQueryBlock];
  for (int64_t u = 0; u < nq; ++u) n_keys[u] = s.kv_len - s.q_len + i0 + u + 1;
  st.reserve(nq, nh, d);
  std::fill(st.acc.begin(), st.acc.begin() + nq * nh * d, 0.0f);
  std::fill(st.run_max.begin(), st.run_max.begin() + nq * nh,
            -std::numeric_limits<float>::infinity());
  std::fill(st.run_sum.begin(), st.run_sum.begin() + nq * nh, 0.0f);
  float* scores = st.scores.data();  // [u][h][kChunk]
  const float* qb = q + (i0 * s.n_heads + h0) * d;
  const int64_t score_q = nh * kChunk;  // between queries in scores
  for (int64_t t0 = 0; t0 < n_keys[nq - 1]; t0 += kChunk) {
    for (int64_t u = 0; u < nq; ++u) len[u] = std::clamp<int64_t>(n_keys[u] - t0, 0, kChunk);
    // Scores: keys every query sees in fours (four chains per query), then the causal edge
    // key by key for the queries that see it.
    int64_t j = 0;
    // Keys every query of the block sees, four (one or two queries) or two (three or four)
    // at a time per group of four queries: eight independent chains.
    for (; j + 4 <= len[0]; j += 4)
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t kvh = (h0 + h) / group * d;
        const Elem* keys[4] = {k.row(t0 + j) + kvh, k.row(t0 + j + 1) + kvh,
                               k.row(t0 + j + 2) + kvh, k.row(t0 + j + 3) + kvh};
        for (int64_t u = 0; u < nq; u += 4) {
          const float* qu = qb + u * q_stride + h * d;
          float* o = scores + u * score_q + h * kChunk + j;
          switch (std::min<int64_t>(4, nq - u)) {
            case 1:
              dots<1, 4>(qu, q_stride, keys, d, divisor, o, score_q);
              break;
            case 2:
              dots<2, 4>(qu, q_stride, keys, d, divisor, o, score_q);
              break;
            case 3:
              dots<3, 2>(qu, q_stride, keys, d, divisor, o, score_q);
              dots<3, 2>(qu, q_stride, keys + 2, d, divisor, o + 2, score_q);
              break;
            default:
              dots<4, 2>(qu, q_stride, keys, d, divisor, o, score_q);
              dots<4, 2>(qu, q_stride, keys + 2, d, divisor, o + 2, score_q);
          }
        }
      }
    for (; j < len[nq - 1]; ++j) {
      int64_t u0 = 0;  // the first query that sees key j
      while (len[u0] <= j) ++u0;
      const auto* krow = k.row(t0 + j);
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t u = u0; u < nq; u += 4)
          dots_one_key(std::min<int64_t>(4, nq - u), qb + u * q_stride + h * d, q_stride,
                       krow + (h0 + h) / group * d, d, divisor,
                       scores + u * score_q + h * kChunk + j, score_q);
    }
    // Softmax of the chunk, per (query, head), against the running max.
    for (int64_t u = 0; u < nq; ++u) {
      if (len[u] == 0) continue;
      for (int64_t h = 0; h < nh; ++h) {
        const int64_t uh = u * nh + h;
        float* sc = scores + uh * kChunk;
        float chunk_max = sc[0];
        for (int64_t jj = 1; jj < len[u]; ++jj) chunk_max = std::max(chunk_max, sc[jj]);
        if (chunk_max > st.run_max[size_t(uh)]) {
          const float correction = std::exp(st.run_max[size_t(uh)] - chunk_max);  // 0 at first
          st.run_sum[size_t(uh)] *= correction;
          float* a = st.acc.data() + uh * d;
          const __m256 cv = _mm256_set1_ps(correction);
          for (int64_t c = 0; c < d; c += 8)
            _mm256_storeu_ps(a + c, _mm256_mul_ps(_mm256_loadu_ps(a + c), cv));
          st.run_max[size_t(uh)] = chunk_max;
        }
        const __m256 mx = _mm256_set1_ps(st.run_max[size_t(uh)]);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t jj = 0; jj < len[u]; jj += 8) {
          // The chunk's last vector: lanes past len[u] are computed on whatever is there and
          // then zeroed, both in sc and in the sum.
          const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
          const __m256 keep =
              _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(len[u] - jj)), lane));
          const __m256 e = _mm256_and_ps(
              keep, detail::exp_avx2(_mm256_min_ps(  // min(0, NaN) is NaN: it propagates
                        _mm256_setzero_ps(), _mm256_sub_ps(_mm256_loadu_ps(sc + jj), mx))));
          _mm256_storeu_ps(sc + jj, e);
          sum = _mm256_add_ps(sum, e);
        }
        st.run_sum[size_t(uh)] += detail::hsum(sum);
      }
    }
    // Values: per head, 32 columns at a time, queries two at a time.
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = (h0 + h) / group * d;
      for (int64_t c = 0; c < d; c += 32) {
        const auto vrow = [&](int64_t jj) { return v.row(t0 + jj) + kvh + c; };
        for (int64_t u = 0; u < nq; u += 2) {
          const float* p = scores + u * score_q + h * kChunk;
          float* a = st.acc.data() + (u * nh + h) * d + c;
          const int64_t acc_q = nh * d;
          const int64_t nv = std::min<int64_t>(4, (d - c) / 8);
          const bool pair = u + 1 < nq;
#define DSMATH_WEIGHTED_VALUES(NV)                                   \
  pair ? weighted_values<2, NV>(vrow, p, score_q, len + u, a, acc_q) \
       : weighted_values<1, NV>(vrow, p, score_q, len + u, a, acc_q)
          if (nv == 4)
            DSMATH_WEIGHTED_VALUES(4);
          else if (nv == 3)
            DSMATH_WEIGHTED_VALUES(3);
          else if (nv == 2)
            DSMATH_WEIGHTED_VALUES(2);
          else
            DSMATH_WEIGHTED_VALUES(1);
#undef DSMATH_WEIGHTED_VALUES
        }
      }
    }
  }
  for (int64_t u = 0; u < nq; ++u)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t uh = u * nh + h;
      float* o = out + ((i0 + u) * s.n_heads + h0 + h) * d;
      const __m256 inv = _mm256_set1_ps(1.0f / st.run_sum[size_t(uh)]);
      for (int64_t c = 0; c < d; c += 8)
        _mm256_storeu_ps(o + c, _mm256_mul_ps(_mm256_loadu_ps(st.acc.data() + uh * d + c), inv));
    }
}

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
  [[maybe_unused]] const bool blocked = detail::cpu_has_avx2() && s.head_dim % 8 == 0;
  [[maybe_unused]] const bool simd = detail::cpu_has_avx2();
#if DSMATH_HAVE_X86_SIMD
  const int64_t block = blocked ? kQueryBlock : 1;
#else
  const int64_t block = 1;
#endif
  // Tasks are (block of queries, run of heads): whole rows of heads when there are enough
  // blocks to keep every core busy (prefill), a few heads each when there are not (decode).
  const int64_t blocks = (s.q_len + block - 1) / block;
  const int64_t threads = omp_get_max_threads();
  const int64_t splits = std::clamp<int64_t>((2 * threads + blocks - 1) / blocks, 1, s.n_heads);
  const int64_t per = (s.n_heads + splits - 1) / splits;
  const int64_t tasks_per_block = (s.n_heads + per - 1) / per;
#pragma omp parallel if (blocks * tasks_per_block > 1)
  {
#if DSMATH_HAVE_X86_SIMD
    thread_local BlockState block_state;  // sized here, on every thread, whether or not it
    if (blocked) block_state.reserve(block, per, s.head_dim);  // gets a task this time
#endif
    thread_local HeadState st;  // the per-query path's: grown and never shrunk
    if (!blocked) {
      grow(st.acc, per * s.head_dim);
      grow(st.scores, per * kChunk);
      grow(st.run_max, per);
      grow(st.run_sum, per);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < blocks * tasks_per_block; ++task) {
      const int64_t i0 = task / tasks_per_block * block, nq = std::min(block, s.q_len - i0);
      const int64_t h0 = task % tasks_per_block * per, h1 = std::min(s.n_heads, h0 + per);
#if DSMATH_HAVE_X86_SIMD
      if (blocked) {
        attend_block_avx2(q, k, v, s, divisor, i0, nq, h0, h1, block_state, out);
        continue;
      }
      if (simd) {
        attend_avx2(q, k, v, s, divisor, i0, h0, h1, st, out);
        continue;
      }
#endif
      attend_portable(q, k, v, s, divisor, i0, h0, h1, st, out);
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
