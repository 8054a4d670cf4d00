// silu_mul: out = silu(gate) * up with silu(x) = x / (1 + e^-x); add: x += y (see
// activation.h). The vector paths compute e^-|g| (an exponent <= 0, kernels/cpu/exp.h) and
//   silu(g) u = (g s) / (1 + t) u,   t = e^-|g|,   s = 1 for g >= 0, t below;
// the portable one the formula itself with the C library's e^x. Each applies the same
// operations in the same order to every element (a vector path runs its last partial vector
// through a padded copy), so an element's result never depends on where it sits. Both ops
// parallelize only large inputs.
#include "kernels/cpu/activation.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/exp.h"

namespace dsmath::cpu {

namespace {
// Below this many elements a parallel region costs more than the loop.
constexpr int64_t kParallelMin = 1 << 15;
// Elements per parallel chunk: a multiple of every vector width.
constexpr int64_t kChunk = 4096;

// Without AVX2 the polynomial in scalar code is slower than the C library's e^x: keep that.
void silu_mul_portable(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

#if DSMATH_HAVE_X86_SIMD
DSMATH_AVX2 inline __m256 silu_mul8(__m256 g, __m256 u) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = detail::exp_avx2(_mm256_or_ps(g, _mm256_set1_ps(-0.0f)));  // e^-|g|
  const __m256 s = _mm256_blendv_ps(one, t, _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ));
  return _mm256_mul_ps(_mm256_div_ps(_mm256_mul_ps(g, s), _mm256_add_ps(one, t)), u);
}

DSMATH_AVX2 void silu_mul_avx2(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i == n) return;
  float g[8] = {}, u[8] = {}, o[8];
  std::copy(gate + i, gate + n, g);
  std::copy(up + i, up + n, u);
  _mm256_storeu_ps(o, silu_mul8(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
  std::copy(o, o + (n - i), out + i);
}

DSMATH_AVX512 inline __m512 silu_mul16(__m512 g, __m512 u) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = detail::exp_avx512(
      _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(g), _mm512_set1_epi32(INT32_MIN))));
  const __m512 s =
      _mm512_mask_blend_ps(_mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ), one, t);
  return _mm512_mul_ps(_mm512_div_ps(_mm512_mul_ps(g, s), _mm512_add_ps(one, t)), u);
}

DSMATH_AVX512 void silu_mul_avx512(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, silu_mul16(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  if (i == n) return;
  float g[16] = {}, u[16] = {}, o[16];
  std::copy(gate + i, gate + n, g);
  std::copy(up + i, up + n, u);
  _mm512_storeu_ps(o, silu_mul16(_mm512_loadu_ps(g), _mm512_loadu_ps(u)));
  std::copy(o, o + (n - i), out + i);
}
#endif

void silu_mul_range(detail::Isa isa, const float* gate, const float* up, int64_t n, float* out) {
#if DSMATH_HAVE_X86_SIMD
  if (isa == detail::Isa::Avx512) return silu_mul_avx512(gate, up, n, out);
  if (isa == detail::Isa::Avx2) return silu_mul_avx2(gate, up, n, out);
#endif
  (void)isa;
  silu_mul_portable(gate, up, n, out);
}
}  // namespace

void silu_mul_on(detail::Isa isa, const float* gate, const float* up, int64_t n, float* out) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = std::min(n, begin + kChunk);
    silu_mul_range(isa, gate + begin, up + begin, end - begin, out + begin);
  }
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  silu_mul_on(detail::cpu_isa(), gate, up, n, out);
}

void silu_mul_reference(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void add(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace dsmath::cpu
