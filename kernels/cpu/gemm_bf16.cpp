// The AVX512-BF16 path of linear() for bf16 weights:
//
//   y[t, n] = sum_k W[n, k] * x[t, k]  =  sum_k W[n, k] * hi[t, k]  +  W[n, k] * lo[t, k]
//   hi = bf16(x),  lo = bf16(x - hi)      (round to nearest even; x - hi is exact in f32)
//
// vdpbf16ps multiplies 32 pairs of bf16 and adds each two neighbouring products into one of
// 16 f32 lanes. W is bf16 in the checkpoint and goes in as stored. x is f32, and bf16 alone
// keeps 8 of its 24 bits (logits off by ~1e-2); hi + lo keeps ~17 (|x - hi - lo| <= 2^-18 |x|),
// well inside the f32 goldens' 1e-3, at two instructions per 32 products: the f32 FMA rate on
// a CPU without AMX, minus the bf16 -> f32 widening of every weight the f32 path pays.
//
// At --matmul-precision medium (set_matmul_precision) the lo part is left out: x in bf16 as
// torch and llama.cpp use it, twice the products per instruction, logits off by ~1e-2.
//
// x is packed once per call: per token, per chunk, blocks of 32 columns as [hi x 32][lo x 32]
// ([hi x 32] alone at medium precision),
// each chunk's last block zero-padded, so a weight row's ragged end is a masked load whose
// padding adds exact zeros. The work is laid out as in gemm.cpp: groups of rows handed out
// dynamically; a micro-kernel computes R rows x T tokens with one accumulator each, every
// accumulator summed in the same k order whatever R, T and m are (batch-invariant). A chunk's
// accumulators are reduced four at a time by transposing adds (about 3 instructions a sum
// instead of 8 for a lone horizontal sum; it matters for the 8-chunk row-parallel layers),
// each sum in the same lane order.
#include "kernels/cpu/gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/row_groups.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu::detail {

#if DSMATH_HAVE_X86_SIMD

#define DSMATH_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c")))

bool cpu_has_avx512_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

namespace {

constexpr int64_t kMaxChunks = 8;
constexpr int64_t kBlock = 32;  // columns per vdpbf16ps

// One token (batch-1 decode) is bound by reading W: it takes two rows at a time (enough
// independent sums to hide vdpbf16ps' latency at memory speed) and reads them as one prefetched
// stream (simd.h). kernels_bench BM_Linear m 1 cold, 2 threads, medians of 3 runs interleaved
// with eight rows in lockstep: 11008 x 4096 33.5 -> 46.9 GB/s, 4096 x 11008 30.3 -> 47.2,
// 102400 x 384 18.3 -> 31.2.
constexpr int kDecodeRows = 2;

// x packed for the kernel: token t's chunk c, block b starts at
// data + t * token_stride + (c * blocks + b) * 64 (hi then lo, 32 each).
struct PackedX {
  const uint16_t* data;
  int64_t token_stride;
  int64_t blocks;        // per chunk
  int64_t block_stride;  // 64 (hi, lo) or 32 (hi alone: medium precision)
};

DSMATH_AVX512BF16 void pack_token(const float* x, int64_t chunks, int64_t kc, int64_t blocks,
                                  bool split, uint16_t* out) {
  const int64_t block_stride = split ? 2 * kBlock : kBlock;
  for (int64_t c = 0; c < chunks; ++c) {
    for (int64_t b = 0; b < blocks; ++b) {
      uint16_t* dst = out + (c * blocks + b) * block_stride;
      for (int half = 0; half < 2; ++half) {
        const int64_t k = b * kBlock + half * 16;
        const int64_t left = std::clamp<int64_t>(kc - k, 0, 16);
        const __mmask16 mask = __mmask16((1u << left) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(mask, x + c * kc + k);
        const __m256bh hi = _mm512_cvtneps_pbh(v);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + half * 16), (__m256i)hi);
        if (!split) continue;
        const __m512 hi_f32 =
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)hi), 16));
        const __m256bh lo = _mm512_cvtneps_pbh(_mm512_sub_ps(v, hi_f32));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + kBlock + half * 16), (__m256i)lo);
      }
    }
  }
}

// [sum(a), sum(b), sum(c), sum(d)], each over its 16 lanes as ((i + i+8) + (i+4 ...)) ... :
// the same tree for every vector, wherever it sits among the four.
DSMATH_AVX512BF16 inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab =  // lanes 0-7: a[i] + a[i+8]; lanes 8-15: the same for b
      _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd =
      _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  __m512 s =  // 128-bit lane j holds the four-lane fold of a, b, c, d
      _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  s = _mm512_add_ps(s, _mm512_shuffle_ps(s, s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm512_add_ps(s, _mm512_shuffle_ps(s, s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), s));
}

// y[t * ldy + r] = sum over chunks (tree) of dot(W row r, x token t) over the chunk's columns.
// kStream: the rows are prefetched as one stream (kDecodeRows above), for one token and for the
// first token block of a batch, which is what reads the row group from memory (batch 16 of the
// 7B shape: +21%, matching the f32 path; later blocks find the rows in L2). Prefetching each row
// 512-2048 bytes ahead instead had been 5-30% slower than none.
template <int R, int T, bool kSplit, Fetch F>
DSMATH_AVX512BF16 void micro(const PackedX& x, const uint16_t* w, int64_t row_elems, int64_t chunks,
                             int64_t kc, LaterRows& later, float* y, int64_t ldy) {
  constexpr int N = R * T, N4 = (N + 3) / 4 * 4;
  constexpr int64_t kXBlock = kSplit ? 2 * kBlock : kBlock;  // x.block_stride, known here
  // Locals, not x's fields: read through the reference, they were reloaded every block.
  const int64_t blocks = x.blocks, token_stride = x.token_stride;
  alignas(64) float part[kMaxChunks][N4];
  for (int64_t c = 0; c < chunks; ++c) {
    __m512 acc[N4];
    for (int i = 0; i < N4; ++i) acc[i] = _mm512_setzero_ps();
    const uint16_t* wc = w + c * kc;
    const uint16_t* xc = x.data + c * blocks * kXBlock;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k = b * kBlock;
      const __mmask32 mask = kc - k >= kBlock ? ~__mmask32(0) : __mmask32((1u << (kc - k)) - 1u);
      if constexpr (F == Fetch::kStream)  // the R rows as one linear stream, R lines a block
        prefetch_stream(w, kStreamAhead, (c * blocks + b) * R * 64, R * 64);
      if constexpr (F == Fetch::kLater) later.step();
      __m512bh wv[R];
      for (int r = 0; r < R; ++r) {
        wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mask, wc + r * row_elems + k);
      }
      for (int t = 0; t < T; ++t) {
        const uint16_t* xb = xc + t * token_stride + b * kXBlock;
        const __m512bh hi = (__m512bh)_mm512_loadu_si512(xb);
        for (int r = 0; r < R; ++r) acc[r * T + t] = _mm512_dpbf16_ps(acc[r * T + t], wv[r], hi);
        if constexpr (kSplit) {
          const __m512bh lo = (__m512bh)_mm512_loadu_si512(xb + kBlock);
          for (int r = 0; r < R; ++r) acc[r * T + t] = _mm512_dpbf16_ps(acc[r * T + t], wv[r], lo);
        }
      }
    }
    for (int i = 0; i < N4; i += 4)
      _mm_store_ps(&part[c][i], reduce4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
  }
  for (int64_t stride = 1; stride < chunks; stride *= 2)  // the pairwise tree of gemm.h
    for (int64_t i = 0; i + stride < chunks; i += 2 * stride)
      for (int j = 0; j < N; ++j) part[i][j] += part[i + stride][j];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * ldy + r] = part[0][r * T + t];
}

template <int R, int T, bool kSplit, Fetch F>
DSMATH_AVX512BF16 void rows_block(const PackedX& x, const uint16_t* w, int64_t row_elems,
                                  int64_t chunks, int64_t kc, int64_t n0, int64_t n1,
                                  LaterRows& later, float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + R <= n1; n += R)
    micro<R, T, kSplit, F>(x, w + n * row_elems, row_elems, chunks, kc, later, y + n, ldy);
  for (; n < n1; ++n)
    micro<1, T, kSplit, F>(x, w + n * row_elems, row_elems, chunks, kc, later, y + n, ldy);
}

// 32 zmm registers: R*T accumulators + R weight vectors + hi and lo must fit.
constexpr int64_t kTokens = 6;
constexpr int rows_per_micro(int64_t tokens) {
  constexpr int kRows[kTokens + 1] = {0, kDecodeRows, 8, 6, 6, 4, 4};
  return kRows[std::min(tokens, kTokens)];
}

template <bool kSplit, Fetch F>
DSMATH_AVX512BF16 void run_block(const PackedX& x, int64_t tokens, const uint16_t* w,
                                 int64_t row_elems, int64_t chunks, int64_t kc, int64_t n0,
                                 int64_t n1, LaterRows& later, float* y, int64_t ldy) {
  // One token reads its rows as a stream unless it is fetching the next group's.
  constexpr Fetch kOne = F == Fetch::kLater ? F : Fetch::kStream;
  switch (tokens) {
    case 1:
      return rows_block<rows_per_micro(1), 1, kSplit, kOne>(x, w, row_elems, chunks, kc, n0, n1,
                                                            later, y, ldy);
    case 2:
      return rows_block<rows_per_micro(2), 2, kSplit, F>(x, w, row_elems, chunks, kc, n0, n1, later,
                                                         y, ldy);
    case 3:
      return rows_block<rows_per_micro(3), 3, kSplit, F>(x, w, row_elems, chunks, kc, n0, n1, later,
                                                         y, ldy);
    case 4:
      return rows_block<rows_per_micro(4), 4, kSplit, F>(x, w, row_elems, chunks, kc, n0, n1, later,
                                                         y, ldy);
    case 5:
      return rows_block<rows_per_micro(5), 5, kSplit, F>(x, w, row_elems, chunks, kc, n0, n1, later,
                                                         y, ldy);
    default:
      return rows_block<rows_per_micro(6), 6, kSplit, F>(x, w, row_elems, chunks, kc, n0, n1, later,
                                                         y, ldy);
  }
}

template <Fetch F>
DSMATH_AVX512BF16 void run_block(bool split, const PackedX& x, int64_t tokens, const uint16_t* w,
                                 int64_t row_elems, int64_t chunks, int64_t kc, int64_t n0,
                                 int64_t n1, LaterRows& later, float* y, int64_t ldy) {
  (split ? run_block<true, F> : run_block<false, F>)(x, tokens, w, row_elems, chunks, kc, n0, n1,
                                                     later, y, ldy);
}

}  // namespace

void linear_avx512_bf16(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                        float* y) {
  DSMATH_CHECK(cpu_has_avx512_bf16() && w.dtype == DType::BF16,
               "linear_avx512_bf16: needs AVX512_BF16 and bf16 weights");
  const int64_t n_out = w.rows, k_dim = w.cols, kc = k_dim / chunks;
  const int64_t blocks = (kc + kBlock - 1) / kBlock;
  const int64_t block_stride = split ? 2 * kBlock : kBlock;
  const int64_t token_stride = chunks * blocks * block_stride;
  // Owned by the calling thread, grown and never shrunk: no allocation per call once warm. Every
  // block of x starts a cache line: at malloc's 16-byte alignment each 64-byte load of x spanned
  // two lines, and the 7B shape's m 128 products ran ~10% slower (EPYC Zen 5, 2 threads).
  constexpr size_t kLine = 64;
  thread_local std::vector<uint16_t> packed;
  const size_t need = size_t(m * token_stride) + kLine / sizeof(uint16_t);
  if (packed.size() < need) packed.resize(need);
  auto* xp = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(packed.data()) + kLine - 1) &
                                         ~uintptr_t(kLine - 1));
  const PackedX px{xp, token_stride, blocks, block_stride};
  const auto* wb = static_cast<const uint16_t*>(w.data);

  // Packing is ~1% of the products' work; done here, it saves the threads a barrier.
  for (int64_t t = 0; t < m; ++t)
    pack_token(x + t * k_dim, chunks, kc, blocks, split, xp + t * token_stride);
  const RowWalk walk{m,  kTokens,  n_out, m == 1 ? kStreamRowGroup : 24,  // a multiple of every R
                     wb, k_dim * 2};
  walk_row_groups(
      walk,
      [&](int64_t tokens, int64_t rows) {
        return micro_calls(rows, rows_per_micro(tokens)) * chunks * blocks;
      },
      [&](int64_t t, int64_t tokens, int64_t n0, int64_t n1, Fetch fetch, LaterRows& later) {
        const PackedX block{px.data + t * token_stride, token_stride, blocks, block_stride};
        const auto run = fetch == Fetch::kStream  ? run_block<Fetch::kStream>
                         : fetch == Fetch::kLater ? run_block<Fetch::kLater>
                                                  : run_block<Fetch::kNone>;
        run(split, block, tokens, wb, k_dim, chunks, kc, n0, n1, later, y + t * n_out, n_out);
      });
}

#else  // no x86 SIMD: never chosen

bool cpu_has_avx512_bf16() {
  return false;
}
void linear_avx512_bf16(const float*, int64_t, const WeightView&, int64_t, bool, float*) {
  DSMATH_CHECK(false, "linear_avx512_bf16: not built for this architecture");
}

#endif

}  // namespace dsmath::cpu::detail
