#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "kernels/cpu/exp.h"

namespace dsmath::cpu {

namespace {

using detail::exp_nonpositive;
using detail::kMinExponent;
#if DSMATH_HAVE_X86_SIMD
using detail::exp_avx2;
using detail::exp_avx512;
#endif

bool kept(float p, int64_t i, float floor, float cut_p, int64_t cut_i) {
  return p >= floor && (p > cut_p || (p == cut_p && i <= cut_i));
}

// ---- portable: eight lanes the compiler may vectorize -----------------------------------

RowArgmax argmax_portable(const float* z, int64_t n) {
  float bad = 0.0f;  // v - v is 0 for finite v, NaN otherwise
  int64_t best = 0;
  for (int64_t i = 0; i < n; ++i) {
    bad += z[i] - z[i];
    if (z[i] > z[best]) best = i;
  }
  return {best, bad == 0.0f};
}

double exp_portable(const float* z, int64_t n, float max, float scale, float* p) {
  float lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) lanes[j] += p[i + j] = exp_nonpositive((z[i + j] - max) * scale);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += p[i] = exp_nonpositive((z[i] - max) * scale);
  return sum;
}

double mask_portable(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i,
                     float* out) {
  float lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      lanes[j] += out[i + j] = kept(p[i + j], i + j, floor, cut_p, cut_i) ? p[i + j] : 0.0f;
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += out[i] = kept(p[i], i, floor, cut_p, cut_i) ? p[i] : 0.0f;
  return sum;
}

#if DSMATH_HAVE_X86_SIMD

// ---- AVX2 ---------------------------------------------------------------------------------

DSMATH_AVX2 RowArgmax argmax_avx2(const float* z, int64_t n) {
  if (n < 8) return argmax_portable(z, n);
  __m256 top = _mm256_loadu_ps(z), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(z + i);
    top = _mm256_max_ps(top, v);
    bad = _mm256_add_ps(bad, _mm256_sub_ps(v, v));
  }
  float lanes[8], bads[8];
  _mm256_storeu_ps(lanes, top);
  _mm256_storeu_ps(bads, bad);
  float m = lanes[0], b = 0.0f;
  for (int j = 0; j < 8; ++j) m = std::max(m, lanes[j]), b += bads[j];
  for (int64_t k = i; k < n; ++k) m = std::max(m, z[k]), b += z[k] - z[k];
  if (b != 0.0f) return {0, false};
  const __m256 target = _mm256_set1_ps(m);
  for (i = 0; i + 8 <= n; i += 8)
    if (const int hit =
            _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(z + i), target, _CMP_EQ_OQ)))
      return {i + std::countr_zero(unsigned(hit)), true};
  for (; i < n; ++i)
    if (z[i] == m) return {i, true};
  return {0, true};
}

DSMATH_AVX2 double exp_avx2_row(const float* z, int64_t n, float max, float scale, float* p) {
  __m256 acc = _mm256_setzero_ps();
  const __m256 vmax = _mm256_set1_ps(max), vscale = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(z + i), vmax), vscale));
    _mm256_storeu_ps(p + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += p[i] = exp_nonpositive((z[i] - max) * scale);
  return sum;
}

DSMATH_AVX2 double mask_avx2(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i,
                             float* out) {
  __m256 acc = _mm256_setzero_ps();
  const __m256 vfloor = _mm256_set1_ps(floor), vcut = _mm256_set1_ps(cut_p);
  // Indices as int32 (vocabularies are far below 2^31): i <= cut_i  <=>  !(i > cut_i).
  const __m256i vcut_i = _mm256_set1_epi32(int32_t(std::clamp<int64_t>(cut_i, -1, INT32_MAX)));
  __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, _mm256_set1_epi32(8))) {
    const __m256 v = _mm256_loadu_ps(p + i);
    const __m256 above = _mm256_cmp_ps(v, vcut, _CMP_GT_OQ);
    const __m256 tie = _mm256_and_ps(_mm256_cmp_ps(v, vcut, _CMP_EQ_OQ),
                                     _mm256_castsi256_ps(_mm256_xor_si256(
                                         _mm256_cmpgt_epi32(idx, vcut_i), _mm256_set1_epi32(-1))));
    const __m256 keep =
        _mm256_and_ps(_mm256_cmp_ps(v, vfloor, _CMP_GE_OQ), _mm256_or_ps(above, tie));
    const __m256 o = _mm256_and_ps(v, keep);
    _mm256_storeu_ps(out + i, o);
    acc = _mm256_add_ps(acc, o);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += out[i] = kept(p[i], i, floor, cut_p, cut_i) ? p[i] : 0.0f;
  return sum;
}

// ---- AVX-512 ------------------------------------------------------------------------------

DSMATH_AVX512 RowArgmax argmax_avx512(const float* z, int64_t n) {
  if (n < 16) return argmax_portable(z, n);
  __m512 top = _mm512_loadu_ps(z), bad = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(z + i);
    top = _mm512_max_ps(top, v);
    bad = _mm512_add_ps(bad, _mm512_sub_ps(v, v));
  }
  float lanes[16], bads[16];
  _mm512_storeu_ps(lanes, top);
  _mm512_storeu_ps(bads, bad);
  float m = lanes[0], b = 0.0f;
  for (int j = 0; j < 16; ++j) m = std::max(m, lanes[j]), b += bads[j];
  for (int64_t k = i; k < n; ++k) m = std::max(m, z[k]), b += z[k] - z[k];
  if (b != 0.0f) return {0, false};
  const __m512 target = _mm512_set1_ps(m);
  for (i = 0; i + 16 <= n; i += 16)
    if (const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(z + i), target, _CMP_EQ_OQ))
      return {i + std::countr_zero(unsigned(hit)), true};
  for (; i < n; ++i)
    if (z[i] == m) return {i, true};
  return {0, true};
}

DSMATH_AVX512 double exp_avx512_row(const float* z, int64_t n, float max, float scale, float* p) {
  __m512 acc = _mm512_setzero_ps();
  const __m512 vmax = _mm512_set1_ps(max), vscale = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(z + i), vmax), vscale));
    _mm512_storeu_ps(p + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  float lanes[16];
  _mm512_storeu_ps(lanes, acc);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += p[i] = exp_nonpositive((z[i] - max) * scale);
  return sum;
}

DSMATH_AVX512 double mask_avx512(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i,
                                 float* out) {
  __m512 acc = _mm512_setzero_ps();
  const __m512 vfloor = _mm512_set1_ps(floor), vcut = _mm512_set1_ps(cut_p);
  const __m512i vcut_i = _mm512_set1_epi32(int32_t(std::clamp<int64_t>(cut_i, -1, INT32_MAX)));
  __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16, idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16))) {
    const __m512 v = _mm512_loadu_ps(p + i);
    const __mmask16 tie =
        _mm512_cmp_ps_mask(v, vcut, _CMP_EQ_OQ) & _mm512_cmple_epi32_mask(idx, vcut_i);
    const __mmask16 keep =
        _mm512_cmp_ps_mask(v, vfloor, _CMP_GE_OQ) & (_mm512_cmp_ps_mask(v, vcut, _CMP_GT_OQ) | tie);
    const __m512 o = _mm512_maskz_mov_ps(keep, v);
    _mm512_storeu_ps(out + i, o);
    acc = _mm512_add_ps(acc, o);
  }
  float lanes[16];
  _mm512_storeu_ps(lanes, acc);
  double sum = 0;
  for (float l : lanes) sum += l;
  for (; i < n; ++i) sum += out[i] = kept(p[i], i, floor, cut_p, cut_i) ? p[i] : 0.0f;
  return sum;
}

#endif  // DSMATH_HAVE_X86_SIMD

}  // namespace

RowArgmax argmax_finite_on(detail::Isa isa, const float* z, int64_t n) {
#if DSMATH_HAVE_X86_SIMD
  if (isa == detail::Isa::Avx512) return argmax_avx512(z, n);
  if (isa == detail::Isa::Avx2) return argmax_avx2(z, n);
#endif
  return argmax_portable(z, n);
}

double exp_shifted_on(detail::Isa isa, const float* z, int64_t n, float max, float scale,
                      float* p) {
#if DSMATH_HAVE_X86_SIMD
  if (isa == detail::Isa::Avx512) return exp_avx512_row(z, n, max, scale, p);
  if (isa == detail::Isa::Avx2) return exp_avx2_row(z, n, max, scale, p);
#endif
  return exp_portable(z, n, max, scale, p);
}

double mask_kept_on(detail::Isa isa, const float* p, int64_t n, float floor, float cut_p,
                    int64_t cut_i, float* out) {
#if DSMATH_HAVE_X86_SIMD
  if (isa == detail::Isa::Avx512) return mask_avx512(p, n, floor, cut_p, cut_i, out);
  if (isa == detail::Isa::Avx2) return mask_avx2(p, n, floor, cut_p, cut_i, out);
#endif
  return mask_portable(p, n, floor, cut_p, cut_i, out);
}

RowArgmax argmax_finite(const float* z, int64_t n) {
  return argmax_finite_on(detail::cpu_isa(), z, n);
}

double exp_shifted(const float* z, int64_t n, float max, float scale, float* p) {
  return exp_shifted_on(detail::cpu_isa(), z, n, max, scale, p);
}

double mask_kept(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i, float* out) {
  return mask_kept_on(detail::cpu_isa(), p, n, floor, cut_p, cut_i, out);
}

RowArgmax argmax_finite_reference(const float* z, int64_t n) {
  int64_t best = 0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(z[i]);
    if (z[i] > z[best]) best = i;
  }
  return {best, finite};
}

double exp_shifted_reference(const float* z, int64_t n, float max, float scale, float* p) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = (z[i] - max) * scale;  // the argument as the paths form it, in f32
    sum += p[i] = float(std::exp(std::max(double(x), double(kMinExponent))));
  }
  return sum;
}

double mask_kept_reference(const float* p, int64_t n, float floor, float cut_p, int64_t cut_i,
                           float* out) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += out[i] = kept(p[i], i, floor, cut_p, cut_i) ? p[i] : 0.0f;
  return sum;
}

}  // namespace dsmath::cpu
