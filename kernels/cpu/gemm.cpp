// y[m, n] = sum_k x[m, k] * W[n, k], W in its stored dtype, f32 arithmetic (see gemm.h).
//
// Layout of the work: OpenMP splits W's rows into contiguous chunks, one stream per core.
// Within a chunk, a micro-kernel computes an R x T block (R weight rows x T tokens) with
// one 8-lane accumulator per (row, token): each weight vector is loaded and converted once
// and used for T tokens, so a batch of 16 decode tokens reads W from memory once rather
// than 16 times. Every (row, token) sum is accumulated in the same k order and reduced the
// same way whatever R, T and m are, so a token's output does not depend on what else is
// in the batch (batch-invariant, which keeps seeded sampling reproducible).
#include "kernels/cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

namespace detail {

bool cpu_has_avx2() {
  static const bool has = [] {
    const char* force = std::getenv("DSMATH_KERNELS_PORTABLE");
    if (force && force[0] && std::strcmp(force, "0") != 0) return false;
#if DSMATH_HAVE_X86_SIMD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return false;
#endif
  }();
  return has;
}

}  // namespace detail

namespace {

void check_shapes(const WeightView& w, int64_t m) {
  DSMATH_CHECK(w.data != nullptr || w.rows * w.cols == 0, "linear: weight has no data");
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
    const auto* p = static_cast<const uint16_t*>(row);
    for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
  }
}

// Portable path: each thread converts one weight row to f32 once and takes its dot
// product with every token.
void linear_portable_impl(const float* x, int64_t m, const WeightView& w, float* y) {
  const int64_t n_out = w.rows, k_dim = w.cols;
  const size_t esize = dtype_size(w.dtype);
  const auto* base = static_cast<const unsigned char*>(w.data);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(k_dim));
#pragma omp for schedule(static)
    for (int64_t n = 0; n < n_out; ++n) {
      row_to_f32(base + size_t(n) * size_t(k_dim) * esize, w.dtype, k_dim, row.data());
      for (int64_t t = 0; t < m; ++t)
        y[t * n_out + n] = detail::dot_portable(x + t * k_dim, row.data(), k_dim);
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

// y[t * ldy + r] = dot(W row r, x row t) for r < R, t < T.
template <DType DT, int R, int T>
DSMATH_AVX2 void micro(const float* x, int64_t k_dim, const unsigned char* w, size_t row_bytes,
                       float* y, int64_t ldy) {
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= k_dim; k += 8) {
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
      for (int64_t kk = k; kk < k_dim; ++kk)
        s += load1<DT>(w + r * row_bytes, kk) * x[t * k_dim + kk];
      y[t * ldy + r] = s;
    }
  }
}

// Rows [n0, n1) for tokens [0, T) with the widest row block that fits the registers.
template <DType DT, int R, int T>
DSMATH_AVX2 void rows_block(const float* x, int64_t k_dim, const unsigned char* base,
                            size_t row_bytes, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + R <= n1; n += R)
    micro<DT, R, T>(x, k_dim, base + n * row_bytes, row_bytes, y + n, ldy);
  for (; n < n1; ++n) micro<DT, 1, T>(x, k_dim, base + n * row_bytes, row_bytes, y + n, ldy);
}

// 16 ymm registers: R*T accumulators + R weight vectors + 1 x vector must fit.
template <DType DT>
DSMATH_AVX2 void tokens_block(const float* x, int64_t tokens, int64_t k_dim,
                              const unsigned char* base, size_t row_bytes, int64_t n0, int64_t n1,
                              float* y, int64_t ldy) {
  switch (tokens) {
    case 1:
      rows_block<DT, 4, 1>(x, k_dim, base, row_bytes, n0, n1, y, ldy);
      break;
    case 2:
      rows_block<DT, 4, 2>(x, k_dim, base, row_bytes, n0, n1, y, ldy);
      break;
    case 3:
      rows_block<DT, 3, 3>(x, k_dim, base, row_bytes, n0, n1, y, ldy);
      break;
    default:
      rows_block<DT, 2, 4>(x, k_dim, base, row_bytes, n0, n1, y, ldy);
      break;
  }
}

template <DType DT>
void linear_avx2(const float* x, int64_t m, const WeightView& w, float* y) {
  const int64_t n_out = w.rows, k_dim = w.cols;
  const size_t row_bytes = size_t(k_dim) * dtype_size(DT);
  const auto* base = static_cast<const unsigned char*>(w.data);
  constexpr int64_t kTokenBlock = 4;
#pragma omp parallel
  {
    // Contiguous row ranges per thread, rounded to 4 rows so row blocks stay whole.
    const int64_t nth = omp_get_num_threads(), tid = omp_get_thread_num();
    const int64_t per = (n_out / 4 + nth - 1) / nth * 4;
    const int64_t n0 = std::min(n_out, tid * per);
    const int64_t n1 = tid == nth - 1 ? n_out : std::min(n_out, n0 + per);
    // A small group of rows is swept over all tokens before moving on, so it is read
    // from memory once and then from L1/L2.
    constexpr int64_t kRowGroup = 16;
    for (int64_t g = n0; g < n1; g += kRowGroup) {
      const int64_t g1 = std::min(n1, g + kRowGroup);
      for (int64_t t = 0; t < m; t += kTokenBlock)
        tokens_block<DT>(x + t * k_dim, std::min(kTokenBlock, m - t), k_dim, base, row_bytes, g, g1,
                         y + t * n_out, n_out);
    }
  }
}

#endif  // DSMATH_HAVE_X86_SIMD

}  // namespace

void linear(const float* x, int64_t m, const WeightView& w, float* y) {
  check_shapes(w, m);
  if (m == 0 || w.rows == 0) return;
#if DSMATH_HAVE_X86_SIMD
  if (detail::cpu_has_avx2()) {
    switch (w.dtype) {
      case DType::F32:
        return linear_avx2<DType::F32>(x, m, w, y);
      case DType::F16:
        return linear_avx2<DType::F16>(x, m, w, y);
      case DType::BF16:
        return linear_avx2<DType::BF16>(x, m, w, y);
    }
  }
#endif
  linear_portable_impl(x, m, w, y);
}

void linear_portable(const float* x, int64_t m, const WeightView& w, float* y) {
  check_shapes(w, m);
  if (m == 0 || w.rows == 0) return;
  linear_portable_impl(x, m, w, y);
}

bool linear_uses_simd() {
  return detail::cpu_has_avx2();
}

void linear_reference(const float* x, int64_t m, const WeightView& w, float* y) {
  check_shapes(w, m);
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
