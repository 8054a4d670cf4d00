// RMSNorm: y = x * rsqrt(mean(x^2) + eps) * gamma, all in f32 (see norm.h).
#include "kernels/cpu/norm.h"

#include <cmath>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

namespace {

void check(int64_t rows, int64_t dim, const void* gamma) {
  DSMATH_CHECK(rows >= 0 && dim > 0, "rms_norm: bad shape rows=", rows, " dim=", dim);
  DSMATH_CHECK(gamma != nullptr, "rms_norm: gamma is null");
}

// gamma as f32: itself when it is f32, else widened once per call (dim is at most a few
// thousand) into the calling thread's buffer, grown and never shrunk: no allocation per call.
const float* gamma_f32(const void* gamma, DType t, int64_t dim) {
  if (t == DType::F32) return static_cast<const float*>(gamma);
  thread_local std::vector<float> g;
  if (g.size() < size_t(dim)) g.resize(size_t(dim));
  for (int64_t i = 0; i < dim; ++i) g[size_t(i)] = load_as_f32(gamma, t, size_t(i));
  return g.data();
}

}  // namespace

void rms_norm(const float* x, int64_t rows, int64_t dim, const void* gamma, DType gamma_dtype,
              float eps, float* y) {
  check(rows, dim, gamma);
  const float* g = gamma_f32(gamma, gamma_dtype, dim);
  [[maybe_unused]] const bool simd = detail::cpu_has_avx2();
#pragma omp parallel for schedule(static) if (rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
#if DSMATH_HAVE_X86_SIMD
    const float ss = simd ? detail::dot_avx2(xr, xr, dim) : detail::dot_portable(xr, xr, dim);
#else
    const float ss = detail::dot_portable(xr, xr, dim);
#endif
    const float inv = 1.0f / std::sqrt(ss / float(dim) + eps);
    // Same order as HF: normalize first, then scale by the weight.
    for (int64_t i = 0; i < dim; ++i) yr[i] = g[i] * (xr[i] * inv);
  }
}

void rms_norm_reference(const float* x, int64_t rows, int64_t dim, const void* gamma,
                        DType gamma_dtype, float eps, float* y) {
  check(rows, dim, gamma);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / double(dim) + double(eps));
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = float(load_as_f32(gamma, gamma_dtype, size_t(i)) * (x[r * dim + i] * inv));
  }
}

}  // namespace dsmath::cpu
