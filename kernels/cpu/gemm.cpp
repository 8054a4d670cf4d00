// y[m, n] = sum_k x[m, k] * W[n, k], W in its stored dtype, f32 arithmetic (see gemm.h).
//
// Layout of the work: OpenMP hands out groups of 24 weight rows. Within a group, a
// micro-kernel computes an R x T block (R weight rows x T tokens) with one SIMD accumulator
// per (row, token): each weight vector is loaded and converted once and used for T tokens,
// and the group stays in L2 while every token block passes over it, so a batch of 16
// decode tokens reads W from memory once rather than 16 times. Every (row, token) sum is
// accumulated in the same k order and reduced the same way whatever R, T and m are, so a token's
// output does not depend on what else is in the batch (batch-invariant, which keeps seeded sampling
// reproducible).
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/gemm_amx.h"
#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/row_groups.h"
#include "kernels/cpu/simd.h"

#if DSMATH_HAVE_X86_SIMD
#include <cpuid.h>
#endif

namespace dsmath::cpu {

namespace detail {

namespace {
Isa hardware_isa_uncached() {
#if DSMATH_HAVE_X86_SIMD
  __builtin_cpu_init();
  // F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports lacks "f16c". The
  // OS's saving of YMM/ZMM state is covered by the avx2/avx512f checks.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c))
    return Isa::Portable;
  return __builtin_cpu_supports("avx512f") ? Isa::Avx512 : Isa::Avx2;
#else
  return Isa::Portable;
#endif
}
}  // namespace

Isa hardware_isa() {
  static const Isa isa = hardware_isa_uncached();
  return isa;
}

Isa cpu_isa() {
  static const Isa isa = [] {
    Isa best = hardware_isa();
    if (const char* cap = std::getenv("DSMATH_KERNELS_ISA")) {
      if (std::strcmp(cap, "portable") == 0) best = Isa::Portable;
      if (std::strcmp(cap, "avx2") == 0 && best > Isa::Avx2) best = Isa::Avx2;
      if (std::strcmp(cap, "avx512") == 0 && best > Isa::Avx512) best = Isa::Avx512;
    }
    return best;
  }();
  return isa;
}

}  // namespace detail

namespace {

constexpr int64_t kMaxChunks = 8;

// The fixed order chunk sums are added in: a pairwise tree, ((p0 + p1) + (p2 + p3)) + ...
// A rank holding consecutive chunks computes a subtree of the same tree.
inline float chunk_tree_sum(float* p, int64_t chunks) {
  for (int64_t stride = 1; stride < chunks; stride *= 2)
    for (int64_t i = 0; i + stride < chunks; i += 2 * stride) p[i] += p[i + stride];
  return p[0];
}

void check_shapes(const WeightView& w, int64_t m) {
  DSMATH_CHECK(w.data != nullptr || w.packed != nullptr || w.rows * w.cols == 0,
               "linear: weight has no data");
  DSMATH_CHECK(m >= 0 && w.rows >= 0 && w.cols >= 0, "linear: negative shape m=", m,
               " rows=", w.rows, " cols=", w.cols);
}

// Converts n elements of a stored row to f32 (portable path).
void row_to_f32(const void* row, DType t, int64_t n, float* out) {
  if (t == DType::F32) {
    std::memcpy(out, row, size_t(n) * 4);
  } else if (t == DType::BF16) {
    const auto* p = static_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits = uint32_t(p[i]) << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  } else {
    // f16_to_f32 branches on subnormals/inf per element (5x slower than bf16 here); a
    // 256 KiB table of all 65536 halves, built once, turns it into one L2 load.
    static const std::vector<float> table = [] {
      std::vector<float> t(65536);
      for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(uint16_t(h));
      return t;
    }();
    const auto* p = static_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) out[i] = table[p[i]];
  }
}

// Portable path: each thread converts one weight row to f32 once and takes its dot
// product with every token, chunk by chunk, the chunks added by the fixed tree.
void linear_portable_impl(const float* x, int64_t m, const WeightView& w, int64_t chunks,
                          float* y) {
  const int64_t n_out = w.rows, k_dim = w.cols, kc = k_dim / chunks;
  const size_t esize = dtype_size(w.dtype);
  const auto* base = static_cast<const unsigned char*>(w.data);
#pragma omp parallel
  {
    thread_local std::vector<float> row;  // grown and never shrunk: no allocation per call
    if (row.size() < size_t(k_dim)) row.resize(size_t(k_dim));
    float part[kMaxChunks];
#pragma omp for schedule(static)
    for (int64_t n = 0; n < n_out; ++n) {
      row_to_f32(base + size_t(n) * size_t(k_dim) * esize, w.dtype, k_dim, row.data());
      for (int64_t t = 0; t < m; ++t) {
        for (int64_t c = 0; c < chunks; ++c)
          part[c] = detail::dot_portable(x + t * k_dim + c * kc, row.data() + c * kc, kc);
        y[t * n_out + n] = chunk_tree_sum(part, chunks);
      }
    }
  }
}

#if DSMATH_HAVE_X86_SIMD

template <DType DT>
DSMATH_AVX2 inline __m256 load8(const unsigned char* row, int64_t k) {
  if constexpr (DT == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (DT == DType::BF16) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
    return _mm256_cvtph_ps(h);
  }
}

template <DType DT>
inline float load1(const unsigned char* row, int64_t k) {
  return load_as_f32(row, DT, size_t(k));
}

// Rows this short (the 384-wide lm_head of `small`: 768 bytes) read as R interleaved streams a
// few hundred bytes long, too short for the hardware prefetchers to follow: 11 GB/s where long
// rows streamed 20. Each step therefore prefetches its share of the rows a few blocks on (the
// rows of a weight are contiguous): small's batch-1 decode went from 79 to 104 tokens/s, its
// batch 16 from 350 to 405 (dsmath-bench-decode, medians of three, 2 threads, AVX2 EPYC).
constexpr size_t kShortRowBytes = 4096;
constexpr int64_t kPrefetchBlocks = 4;  // 1 and 2: 5-10% slower; 8: slower again

// y[t * ldy + r] = dot(W row r, x row t) for r < R, t < T, taken as
// `chunks` dot products over equal ranges of k added by chunk_tree_sum (one chunk: the plain
// dot product).
template <DType DT, int R, int T, detail::Fetch F>
DSMATH_AVX2 void micro(const float* x, int64_t k_dim, int64_t chunks, const unsigned char* w,
                       size_t row_bytes, detail::LaterRows& later, float* y, int64_t ldy) {
  const bool prefetch = row_bytes <= kShortRowBytes;
  const int64_t kc = k_dim / chunks;
  float part[R][T][kMaxChunks];
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t k_end = (c + 1) * kc;
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    int64_t k = c * kc;
    for (; k + 8 <= k_end; k += 8) {
      if (prefetch) {  // this step's share of the rows kPrefetchBlocks blocks on
        constexpr int64_t kStepBytes = R * 8 * int64_t(dtype_size(DT));
        detail::prefetch_stream(w, kPrefetchBlocks * R * row_bytes, k / 8 * kStepBytes, kStepBytes);
      }
      if constexpr (F == detail::Fetch::kLater) later.step();
      __m256 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = load8<DT>(w + r * row_bytes, k);
      for (int t = 0; t < T; ++t) {
        __m256 xv = _mm256_loadu_ps(x + t * k_dim + k);
        for (int r = 0; r < R; ++r) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        float s = detail::hsum(acc[r][t]);
        for (int64_t kk = k; kk < k_end; ++kk)
          s += load1<DT>(w + r * row_bytes, kk) * x[t * k_dim + kk];
        part[r][t][c] = s;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * ldy + r] = chunk_tree_sum(part[r][t], chunks);
}

// Rows [n0, n1) for tokens [0, T) with the widest row block that fits the registers.
template <DType DT, int R, int T, detail::Fetch F>
DSMATH_AVX2 void rows_block(const float* x, int64_t k_dim, int64_t chunks,
                            const unsigned char* base, size_t row_bytes, int64_t n0, int64_t n1,
                            detail::LaterRows& later, float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + R <= n1; n += R)
    micro<DT, R, T, F>(x, k_dim, chunks, base + n * row_bytes, row_bytes, later, y + n, ldy);
  for (; n < n1; ++n)
    micro<DT, 1, T, F>(x, k_dim, chunks, base + n * row_bytes, row_bytes, later, y + n, ldy);
}

// 16 ymm registers: R*T accumulators + R weight vectors + 1 x vector must fit. 3 x 4
// measured 1.3x faster than 2 x 4 at m = 16 (fewer x loads per FMA).
struct Avx2Blocks {
  static constexpr int64_t kTokens = 4;
  static constexpr int64_t kLanes = 8;
  static constexpr int64_t kDecodeRowGroup = 24;  // rows handed out at a time when m is 1
  static constexpr int64_t rows_per_micro(int64_t tokens) { return tokens <= 2 ? 4 : 3; }
  // The first block does not stream: the hardware prefetchers follow a 7B row block here (short
  // rows prefetch in micro()); the last blocks fetch the next group (row_groups.h).
  template <DType DT>
  DSMATH_AVX2 static void run(const float* x, int64_t tokens, int64_t k_dim, int64_t chunks,
                              const unsigned char* base, size_t row_bytes, int64_t n0, int64_t n1,
                              detail::Fetch fetch, detail::LaterRows& later, float* y,
                              int64_t ldy) {
    return fetch == detail::Fetch::kLater
               ? run_rows<DT, detail::Fetch::kLater>(x, tokens, k_dim, chunks, base, row_bytes, n0,
                                                     n1, later, y, ldy)
               : run_rows<DT, detail::Fetch::kNone>(x, tokens, k_dim, chunks, base, row_bytes, n0,
                                                    n1, later, y, ldy);
  }
  template <DType DT, detail::Fetch F>
  DSMATH_AVX2 static void run_rows(const float* x, int64_t tokens, int64_t k_dim, int64_t chunks,
                                   const unsigned char* base, size_t row_bytes, int64_t n0,
                                   int64_t n1, detail::LaterRows& later, float* y, int64_t ldy) {
    switch (tokens) {
      case 1:
        return rows_block<DT, rows_per_micro(1), 1, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                       later, y, ldy);
      case 2:
        return rows_block<DT, rows_per_micro(2), 2, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                       later, y, ldy);
      case 3:
        return rows_block<DT, rows_per_micro(3), 3, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                       later, y, ldy);
      default:
        return rows_block<DT, rows_per_micro(4), 4, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                       later, y, ldy);
    }
  }
};

template <DType DT>
DSMATH_AVX512 inline __m512 load16(const unsigned char* row, int64_t k) {
  if constexpr (DT == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
  } else if constexpr (DT == DType::BF16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
    return _mm512_cvtph_ps(h);
  }
}

// The AVX-512 twin of micro(): 16-lane accumulators, the same scalar tail and chunk tree.
// kStream: the rows are read as one prefetched stream (simd.h): one token (two rows at a time)
// and the first token block of a batch, the one that reads a row group from memory.
template <DType DT, int R, int T, detail::Fetch F>
DSMATH_AVX512 void micro512(const float* x, int64_t k_dim, int64_t chunks, const unsigned char* w,
                            size_t row_bytes, detail::LaterRows& later, float* y, int64_t ldy) {
  const int64_t kc = k_dim / chunks;
  float part[R][T][kMaxChunks];
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t k_end = (c + 1) * kc;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    int64_t k = c * kc;
    for (; k + 16 <= k_end; k += 16) {
      if constexpr (F == detail::Fetch::kStream) {  // the R rows as one linear stream (simd.h)
        constexpr int64_t kStepBytes = R * 16 * int64_t(dtype_size(DT));
        detail::prefetch_stream(w, detail::kStreamAhead, k / 16 * kStepBytes, kStepBytes);
      }
      if constexpr (F == detail::Fetch::kLater) later.step();
      __m512 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = load16<DT>(w + r * row_bytes, k);
      for (int t = 0; t < T; ++t) {
        __m512 xv = _mm512_loadu_ps(x + t * k_dim + k);
        for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
      }
    }
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) {
        float s = _mm512_reduce_add_ps(acc[r][t]);
        for (int64_t kk = k; kk < k_end; ++kk)
          s += load1<DT>(w + r * row_bytes, kk) * x[t * k_dim + kk];
        part[r][t][c] = s;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) y[t * ldy + r] = chunk_tree_sum(part[r][t], chunks);
}

template <DType DT, int R, int T, detail::Fetch F>
DSMATH_AVX512 void rows_block512(const float* x, int64_t k_dim, int64_t chunks,
                                 const unsigned char* base, size_t row_bytes, int64_t n0,
                                 int64_t n1, detail::LaterRows& later, float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + R <= n1; n += R)
    micro512<DT, R, T, F>(x, k_dim, chunks, base + n * row_bytes, row_bytes, later, y + n, ldy);
  for (; n < n1; ++n)
    micro512<DT, 1, T, F>(x, k_dim, chunks, base + n * row_bytes, row_bytes, later, y + n, ldy);
}

// 32 zmm registers: R*T accumulators + R weight vectors + 1 x vector must fit.
struct Avx512Blocks {
  static constexpr int64_t kTokens = 6;
  static constexpr int64_t kLanes = 16;
  static constexpr int64_t kDecodeRowGroup = detail::kStreamRowGroup;  // when m is 1
  static constexpr int64_t rows_per_micro(int64_t tokens) {
    return tokens == 1 ? 2 : tokens == 2 ? 8 : tokens <= 4 ? 6 : 4;
  }
  template <DType DT>
  DSMATH_AVX512 static void run(const float* x, int64_t tokens, int64_t k_dim, int64_t chunks,
                                const unsigned char* base, size_t row_bytes, int64_t n0, int64_t n1,
                                detail::Fetch fetch, detail::LaterRows& later, float* y,
                                int64_t ldy) {
    using detail::Fetch;
    const auto rows = fetch == Fetch::kStream  ? run_rows<DT, Fetch::kStream>
                      : fetch == Fetch::kLater ? run_rows<DT, Fetch::kLater>
                                               : run_rows<DT, Fetch::kNone>;
    return rows(x, tokens, k_dim, chunks, base, row_bytes, n0, n1, later, y, ldy);
  }
  template <DType DT, detail::Fetch F>
  DSMATH_AVX512 static void run_rows(const float* x, int64_t tokens, int64_t k_dim, int64_t chunks,
                                     const unsigned char* base, size_t row_bytes, int64_t n0,
                                     int64_t n1, detail::LaterRows& later, float* y, int64_t ldy) {
    // One token reads its rows as a stream unless it is fetching the next group's.
    constexpr auto kOne = F == detail::Fetch::kLater ? F : detail::Fetch::kStream;
    switch (tokens) {
      case 1:
        return rows_block512<DT, rows_per_micro(1), 1, kOne>(x, k_dim, chunks, base, row_bytes, n0,
                                                             n1, later, y, ldy);
      case 2:
        return rows_block512<DT, rows_per_micro(2), 2, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                          later, y, ldy);
      case 3:
        return rows_block512<DT, rows_per_micro(3), 3, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                          later, y, ldy);
      case 4:
        return rows_block512<DT, rows_per_micro(4), 4, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                          later, y, ldy);
      case 5:
        return rows_block512<DT, rows_per_micro(5), 5, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                          later, y, ldy);
      default:
        return rows_block512<DT, rows_per_micro(6), 6, F>(x, k_dim, chunks, base, row_bytes, n0, n1,
                                                          later, y, ldy);
    }
  }
};

// Groups of rows are walked as row_groups.h says. 24 (and each kDecodeRowGroup) is a multiple of
// every row block above, so only the last group has a ragged end.
template <class Blocks, DType DT>
void linear_blocked(const float* x, int64_t m, const WeightView& w, int64_t chunks, float* y) {
  const int64_t n_out = w.rows, k_dim = w.cols;
  const size_t row_bytes = size_t(k_dim) * dtype_size(DT);
  const auto* base = static_cast<const unsigned char*>(w.data);
  const detail::RowWalk walk{m,    Blocks::kTokens,   n_out, m == 1 ? Blocks::kDecodeRowGroup : 24,
                             base, int64_t(row_bytes)};
  const int64_t vectors = k_dim / chunks / Blocks::kLanes;  // per chunk
  detail::walk_row_groups(
      walk,
      [&](int64_t tokens, int64_t rows) {
        return detail::micro_calls(rows, Blocks::rows_per_micro(tokens)) * chunks * vectors;
      },
      [&](int64_t t, int64_t tokens, int64_t n0, int64_t n1, detail::Fetch fetch,
          detail::LaterRows& later) {
        Blocks::template run<DT>(x + t * k_dim, tokens, k_dim, chunks, base, row_bytes, n0, n1,
                                 fetch, later, y + t * n_out, n_out);
      });
}

template <class Blocks>
void linear_simd(const float* x, int64_t m, const WeightView& w, int64_t chunks, float* y) {
  switch (w.dtype) {
    case DType::F32:
      return linear_blocked<Blocks, DType::F32>(x, m, w, chunks, y);
    case DType::F16:
      return linear_blocked<Blocks, DType::F16>(x, m, w, chunks, y);
    case DType::BF16:
      return linear_blocked<Blocks, DType::BF16>(x, m, w, chunks, y);
  }
}

#endif  // DSMATH_HAVE_X86_SIMD

detail::Isa isa_of(LinearPath p) {
  switch (p) {
    case LinearPath::Amx:
    case LinearPath::Avx512Bf16:
    case LinearPath::Avx512:
      return detail::Isa::Avx512;
    case LinearPath::Avx2:
      return detail::Isa::Avx2;
    case LinearPath::Portable:
      break;
  }
  return detail::Isa::Portable;
}

// DSMATH_KERNELS_ISA=avx512 keeps the f32 AVX-512 path on a CPU with AVX512-BF16 or AMX;
// DSMATH_KERNELS_ISA=avx512_bf16 keeps the AVX512-BF16 path on a CPU with AMX.
bool cap_is(const char* name) {
  const char* cap = std::getenv("DSMATH_KERNELS_ISA");
  return cap != nullptr && std::strcmp(cap, name) == 0;
}

}  // namespace

namespace {
std::atomic<MatmulPrecision> g_matmul_precision{MatmulPrecision::Highest};
}

void set_matmul_precision(MatmulPrecision precision) {
  g_matmul_precision.store(precision);
}

MatmulPrecision matmul_precision() {
  return g_matmul_precision.load(std::memory_order_relaxed);
}

const std::map<std::string, MatmulPrecision>& matmul_precisions() {
  static const std::map<std::string, MatmulPrecision> names{{"highest", MatmulPrecision::Highest},
                                                            {"medium", MatmulPrecision::Medium}};
  return names;
}

LinearPath linear_best_path() {
  static const bool bf16 = detail::cpu_has_avx512_bf16() && !cap_is("avx512");
  static const bool amx = bf16 && !cap_is("avx512_bf16") && detail::cpu_has_amx_bf16();
  switch (detail::cpu_isa()) {
    case detail::Isa::Avx512:
      return amx ? LinearPath::Amx : bf16 ? LinearPath::Avx512Bf16 : LinearPath::Avx512;
    case detail::Isa::Avx2:
      return LinearPath::Avx2;
    case detail::Isa::Portable:
      break;
  }
  return LinearPath::Portable;
}

const char* linear_path_name(LinearPath path) {
  switch (path) {
    case LinearPath::Amx:
      return "amx-bf16";
    case LinearPath::Avx512Bf16:
      return "avx512-bf16";
    case LinearPath::Avx512:
      return "avx512";
    case LinearPath::Avx2:
      return "avx2";
    case LinearPath::Portable:
      break;
  }
  return "portable";
}

// The hardware decides, not the DSMATH_KERNELS_ISA cap: tests and benchmarks may run a
// path that linear() itself is told to avoid.
bool linear_path_supported(LinearPath path) {
  if (path == LinearPath::Avx512Bf16 && !detail::cpu_has_avx512_bf16()) return false;
  if (path == LinearPath::Amx && !detail::cpu_has_amx_bf16()) return false;
  return detail::hardware_isa() >= isa_of(path);
}

void linear_chunked_on_path(LinearPath path, const float* x, int64_t m, const WeightView& w,
                            int64_t chunks, float* y) {
  check_shapes(w, m);
  DSMATH_CHECK(chunks >= 1 && chunks <= kMaxChunks && w.cols % chunks == 0, "linear: ", w.cols,
               " input columns do not split into ", chunks, " chunks (at most ", kMaxChunks, ")");
  DSMATH_CHECK(linear_path_supported(path), "linear: this CPU cannot run the ",
               linear_path_name(path), " path");
  if (m == 0 || w.rows == 0) return;
  if (w.cols == 0) {  // empty sums on every path; such a view may point at no rows at all
    std::fill(y, y + m * w.rows, 0.0f);
    return;
  }
  DSMATH_CHECK(w.data != nullptr || (path == LinearPath::Avx512Bf16 && w.packed != nullptr),
               "linear: the ", w.rows, " x ", w.cols, " weight has no rows for the ",
               linear_path_name(path), " path (only a packed copy)");
#if DSMATH_HAVE_X86_SIMD
  const bool split = matmul_precision() == MatmulPrecision::Highest;
  if (path == LinearPath::Amx && w.dtype == DType::BF16)
    return detail::linear_amx(x, m, w, chunks, split, y);
  if (path == LinearPath::Avx512Bf16 && w.dtype == DType::BF16)
    return detail::linear_avx512_bf16(x, m, w, chunks, split, y);
  if (path == LinearPath::Avx512 || path == LinearPath::Avx512Bf16 || path == LinearPath::Amx)
    return linear_simd<Avx512Blocks>(x, m, w, chunks, y);
  if (path == LinearPath::Avx2) return linear_simd<Avx2Blocks>(x, m, w, chunks, y);
#endif
  linear_portable_impl(x, m, w, chunks, y);
}

void linear_on_path(LinearPath path, const float* x, int64_t m, const WeightView& w, float* y) {
  linear_chunked_on_path(path, x, m, w, 1, y);
}

void linear(const float* x, int64_t m, const WeightView& w, float* y) {
  linear_on_path(linear_best_path(), x, m, w, y);
}

void linear_chunked(const float* x, int64_t m, const WeightView& w, int64_t chunks, float* y) {
  linear_chunked_on_path(linear_best_path(), x, m, w, chunks, y);
}

std::shared_ptr<const void> pack_for_linear(const WeightView& w, int64_t chunks) {
  if (w.dtype != DType::BF16 || w.rows == 0 || w.cols == 0 ||
      linear_best_path() != LinearPath::Avx512Bf16)
    return nullptr;
  return detail::pack_bf16_panels(w, chunks);
}

void linear_reference(const float* x, int64_t m, const WeightView& w, float* y) {
  check_shapes(w, m);
  DSMATH_CHECK(w.data != nullptr || w.rows * w.cols == 0, "linear_reference: needs the rows");
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t n = 0; n < w.rows; ++n) {
      double s = 0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += double(x[t * w.cols + k]) * load_as_f32(w.data, w.dtype, size_t(n * w.cols + k));
      y[t * w.rows + n] = float(s);
    }
  }
}

}  // namespace dsmath::cpu
