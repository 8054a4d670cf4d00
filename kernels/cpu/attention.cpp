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
constexpr int64_t kChunk = kAttentionChunk;

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
// The blocked kernel (attention_blocked.inc), for AVX2 (head_dim a multiple of 8) and AVX-512
// (a multiple of 16). kernels_bench, 7B shape, 2 threads: 512-token prefill on AVX2 2.9x the
// per-query kernel (EPYC Zen 3); on an EPYC Zen 5, AVX-512 against AVX2 with one sum at a time,
// prefill 512 28.7 -> 20.9 ms and decode over 1024 keys 0.87 -> 0.66 ms (medians, interleaved).
// 16: 512-token prefill of the 7B shape in 0.91x the time of 8 (AVX-512, 4-query value blocks)
constexpr int64_t kQueryBlock = 16;

// The running softmax of a block of queries x a run of nh heads, rows [u][h]: the
// un-normalized output (d floats), the running max and the running sum of e^(score - max).
struct RunningSoftmax {
  float *acc, *max, *sum;
  RunningSoftmax query(int64_t u, int64_t nh, int64_t d) const {
    return {acc + u * nh * d, max + u * nh, sum + u * nh};
  }
};

struct BlockState {  // per thread, grown and never shrunk: no allocation per call once warm
  std::vector<float> acc, scores, run_max, run_sum;
  void reserve(int64_t nq, int64_t nh, int64_t d) {
    grow(acc, nq * nh * d);
    grow(scores, nq * nh * kChunk);
    grow(run_max, nq * nh);
    grow(run_sum, nq * nh);
  }
  RunningSoftmax start(int64_t nq, int64_t nh, int64_t d) {  // no key seen yet
    reserve(nq, nh, d);
    std::fill(acc.begin(), acc.begin() + nq * nh * d, 0.0f);
    std::fill(run_max.begin(), run_max.begin() + nq * nh, -std::numeric_limits<float>::infinity());
    std::fill(run_sum.begin(), run_sum.begin() + nq * nh, 0.0f);
    return {acc.data(), run_max.data(), run_sum.data()};
  }
};

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
namespace avx2 {
using V = __m256;
constexpr int64_t kLanes = 8;
inline V vzero() {
  return _mm256_setzero_ps();
}
inline V vset1(float x) {
  return _mm256_set1_ps(x);
}
inline V vload(const float* p) {
  return _mm256_loadu_ps(p);
}
inline V vload(const uint16_t* bf16) {  // widened: a bf16 is the top half of an f32
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bf16));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void vstore(float* p, V v) {
  _mm256_storeu_ps(p, v);
}
inline V vfma(V a, V b, V c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline V vmul(V a, V b) {
  return _mm256_mul_ps(a, b);
}
inline V vadd(V a, V b) {
  return _mm256_add_ps(a, b);
}
inline V vsub(V a, V b) {
  return _mm256_sub_ps(a, b);
}
inline V vmin(V a, V b) {  // b where either is NaN
  return _mm256_min_ps(a, b);
}
inline V vexp(V x) {
  return detail::exp_avx2(x);
}
inline float vhsum(V v) {
  return detail::hsum(v);
}
// out[0..4) = the sums of a, b, c and d, each ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)):
// three horizontal adds and one add for four sums, where hsum takes five instructions for one.
inline void vsum4(V a, V b, V c, V d, float* out) {
  const __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  _mm_store_ps(out, _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1)));
}
inline V vkeep_first(V v, int64_t n) {  // lanes [n, 8) zeroed
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane)), v);
}
#include "kernels/cpu/attention_blocked.inc"
}  // namespace avx2
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")
#endif
namespace avx512 {
using V = __m512;
constexpr int64_t kLanes = 16;
inline V vzero() {
  return _mm512_setzero_ps();
}
inline V vset1(float x) {
  return _mm512_set1_ps(x);
}
inline V vload(const float* p) {
  return _mm512_loadu_ps(p);
}
inline V vload(const uint16_t* bf16) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bf16));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline void vstore(float* p, V v) {
  _mm512_storeu_ps(p, v);
}
inline V vfma(V a, V b, V c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline V vmul(V a, V b) {
  return _mm512_mul_ps(a, b);
}
inline V vadd(V a, V b) {
  return _mm512_add_ps(a, b);
}
inline V vsub(V a, V b) {
  return _mm512_sub_ps(a, b);
}
inline V vmin(V a, V b) {  // b where either is NaN
  return _mm512_min_ps(a, b);
}
inline V vexp(V x) {
  return detail::exp_avx512(x);
}
inline __m256 fold_halves(V v) {  // lane i + lane i + 8
  const __m256 high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  return _mm256_add_ps(_mm512_castps512_ps256(v), high);
}
// The AVX2 sums of the folded halves: one reduction tree, written once.
inline float vhsum(V v) {
  return avx2::vhsum(fold_halves(v));
}
inline void vsum4(V a, V b, V c, V d, float* out) {
  avx2::vsum4(fold_halves(a), fold_halves(b), fold_halves(c), fold_halves(d), out);
}
inline V vkeep_first(V v, int64_t n) {  // lanes [n, 16) zeroed
  return _mm512_maskz_mov_ps(__mmask16(n >= 16 ? 0xFFFF : (1u << n) - 1u), v);
}
#include "kernels/cpu/attention_blocked.inc"
}  // namespace avx512
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

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

// The widest kernel the instruction set and head_dim allow.
enum class Kernel { kPortable, kPerQueryAvx2, kBlockedAvx2, kBlockedAvx512 };
Kernel kernel_for(detail::Isa isa, int64_t head_dim) {
  if (isa >= detail::Isa::Avx512 && head_dim % 16 == 0) return Kernel::kBlockedAvx512;
  if (isa >= detail::Isa::Avx2 && head_dim % 8 == 0) return Kernel::kBlockedAvx2;
  if (isa >= detail::Isa::Avx2) return Kernel::kPerQueryAvx2;
  return Kernel::kPortable;
}

template <typename Rows>
void run_attention(detail::Isa isa, const float* q, const Rows& k, const Rows& v,
                   const AttentionShape& s, float* out) {
  if (s.q_len == 0) return;
  const float divisor = softmax_divisor(s.head_dim);
  const Kernel kernel = kernel_for(isa, s.head_dim);
  const bool blocked = kernel == Kernel::kBlockedAvx2 || kernel == Kernel::kBlockedAvx512;
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
      switch (kernel) {
#if DSMATH_HAVE_X86_SIMD
        case Kernel::kBlockedAvx512:
          avx512::attend_block(q, k, v, s, divisor, i0, nq, h0, h1, block_state, out);
          break;
        case Kernel::kBlockedAvx2:
          avx2::attend_block(q, k, v, s, divisor, i0, nq, h0, h1, block_state, out);
          break;
        case Kernel::kPerQueryAvx2:
          attend_avx2(q, k, v, s, divisor, i0, h0, h1, st, out);
          break;
#endif
        default:
          attend_portable(q, k, v, s, divisor, i0, h0, h1, st, out);
      }
    }
  }
}

}  // namespace

void causal_attention_on(detail::Isa isa, const float* q, const float* k, const float* v,
                         const AttentionShape& s, float* out) {
  check(s);
  DSMATH_CHECK(isa <= detail::hardware_isa(), "attention: this CPU lacks instruction set ",
               int(isa));
  run_attention(isa, q, ContiguousRows{k, s.kv_row_stride}, ContiguousRows{v, s.kv_row_stride}, s,
                out);
}

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s,
                      float* out) {
  causal_attention_on(detail::cpu_isa(), q, k, v, s, out);
}

namespace {
template <typename T>
void run_paged(const float* q, const T* k_blocks, const T* v_blocks, const int32_t* block_table,
               int64_t block_size, const AttentionShape& s, float* out) {
  check(s);
  DSMATH_CHECK(block_size > 0, "paged attention: block_size ", block_size, " must be positive");
  DSMATH_CHECK(block_table != nullptr || s.kv_len == 0, "paged attention: no block table for ",
               s.kv_len, " cached positions");
  run_attention(detail::cpu_isa(), q,
                PagedRows<T>{k_blocks, block_table, block_size, s.kv_row_stride},
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

namespace {
template <typename T>
void run_shared(const SharedDecode& sd, const T* k_blocks, const T* v_blocks,
                const AttentionShape& shape) {
  const AttentionShape s{
      1, 1, shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.kv_row_stride};
  check(s);
  DSMATH_CHECK(sd.block_size > 0 && sd.shared_keys >= 0 && sd.shared_keys % kChunk == 0,
               "shared decode attention: shared_keys ", sd.shared_keys, " is not a multiple of ",
               kChunk);
  for (int64_t i = 0; i < sd.count; ++i)
    DSMATH_CHECK(sd.kv_lens[i] >= std::max<int64_t>(1, sd.shared_keys),
                 "shared decode attention: sequence ", i, " holds ", sd.kv_lens[i],
                 " positions, fewer than the ", sd.shared_keys, " shared");
  const int64_t width = s.n_heads * s.head_dim;
  const auto alone = [&](int64_t i) {
    run_attention(detail::cpu_isa(), sd.q + i * width,
                  PagedRows<T>{k_blocks, sd.block_tables[i], sd.block_size, s.kv_row_stride},
                  PagedRows<T>{v_blocks, sd.block_tables[i], sd.block_size, s.kv_row_stride},
                  {1, sd.kv_lens[i], s.n_heads, s.n_kv_heads, s.head_dim, s.kv_row_stride},
                  sd.out[i]);
  };
  const Kernel kernel = kernel_for(detail::cpu_isa(), s.head_dim);
  if (sd.count < 2 || sd.shared_keys == 0 ||
      (kernel != Kernel::kBlockedAvx2 && kernel != Kernel::kBlockedAvx512)) {
    for (int64_t i = 0; i < sd.count; ++i) alone(i);  // the same bits, one sequence at a time
    return;
  }
#if DSMATH_HAVE_X86_SIMD
  const float divisor = softmax_divisor(s.head_dim);
  // Tasks as in run_attention: (block of up to kQueryBlock sequences, run of heads).
  const int64_t blocks = (sd.count + kQueryBlock - 1) / kQueryBlock;
  const int64_t threads = omp_get_max_threads();
  const int64_t splits = std::clamp<int64_t>((2 * threads + blocks - 1) / blocks, 1, s.n_heads);
  const int64_t per = (s.n_heads + splits - 1) / splits;
  const int64_t tasks_per_block = (s.n_heads + per - 1) / per;
#pragma omp parallel
  {
    thread_local BlockState block_state;  // sized here, on every thread, whether or not it
    block_state.reserve(kQueryBlock, per, s.head_dim);  // gets a task this time
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < blocks * tasks_per_block; ++task) {
      const int64_t b0 = task / tasks_per_block * kQueryBlock;
      const int64_t nq = std::min(kQueryBlock, sd.count - b0);
      const int64_t h0 = task % tasks_per_block * per, h1 = std::min(s.n_heads, h0 + per);
      if (kernel == Kernel::kBlockedAvx512)
        avx512::attend_shared(sd, sd.q, k_blocks, v_blocks, s, divisor, b0, nq, h0, h1,
                              block_state);
      else
        avx2::attend_shared(sd, sd.q, k_blocks, v_blocks, s, divisor, b0, nq, h0, h1, block_state);
    }
  }
#endif
}
}  // namespace

void decode_attention_shared(const SharedDecode& sd, const float* k_blocks, const float* v_blocks,
                             const AttentionShape& shape) {
  run_shared(sd, k_blocks, v_blocks, shape);
}

void decode_attention_shared(const SharedDecode& sd, const uint16_t* k_blocks_bf16,
                             const uint16_t* v_blocks_bf16, const AttentionShape& shape) {
  run_shared(sd, k_blocks_bf16, v_blocks_bf16, shape);
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
