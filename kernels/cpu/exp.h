// Internal to the CPU kernels: e^x for x <= 0 in f32, the sampler's, softmax's and SiLU's.
//
//   x = max(x, -86)                 e^-86 ~ 4e-38, still a normal float (a NaN stays NaN)
//   n = round(x log2 e)             by adding and subtracting 1.5 x 2^23
//   g = x - n ln2                   ln 2 in two parts (Cody-Waite), so g keeps full precision
//   e^x = 2^n (1 + g + g^2/2! + ... + g^6/6!)   |g| <= ln2 / 2: within 5e-7 relative
//
// The vector forms use fused multiply-adds, the scalar one does not: a result may differ by an
// ulp between instruction sets (never between runs, ranks or batch sizes on one machine).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

#include "kernels/cpu/simd.h"

namespace dsmath::cpu::detail {

constexpr float kLog2e = 1.44269504089f;
// ln 2 in two parts (Cody-Waite): n * kLn2Hi is exact for the n that occur, so g = x - n ln2
// keeps full precision even at x = -86.
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kRound = 12582912.0f;   // 1.5 * 2^23: t + kRound rounds t to an integer
constexpr float kMinExponent = -86.0f;  // e^-86 ~ 4e-38, still a normal float

// e^x for x <= 0 (the scalar form of the vector paths below).
inline float exp_nonpositive(float x) {
  x = std::max(x, kMinExponent);
  const float t = x * kLog2e;
  const float rounded = t + kRound;
  const float n = rounded - kRound;
  const float g = (x - n * kLn2Hi) - n * kLn2Lo;
  const float p =
      1.0f + g * (1.0f + g * (0.5f + g * (1.0f / 6 +
                                          g * (1.0f / 24 + g * (1.0f / 120 + g * (1.0f / 720))))));
  const int32_t exponent = std::bit_cast<int32_t>(rounded) - 0x4B400000;
  return std::bit_cast<float>(std::bit_cast<int32_t>(p) + exponent * (1 << 23));
}

#if DSMATH_HAVE_X86_SIMD
DSMATH_AVX2 inline __m256 exp_avx2(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(kMinExponent), x);  // max(c, NaN) is NaN: it propagates
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(kLog2e));
  const __m256 rounded = _mm256_add_ps(t, _mm256_set1_ps(kRound));
  const __m256 n = _mm256_sub_ps(rounded, _mm256_set1_ps(kRound));
  const __m256 g =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
  __m256 p = _mm256_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm256_fmadd_ps(p, g, _mm256_set1_ps(c));
  const __m256i exponent =
      _mm256_sub_epi32(_mm256_castps_si256(rounded), _mm256_set1_epi32(0x4B400000));
  return _mm256_castsi256_ps(
      _mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(exponent, 23)));
}

DSMATH_AVX512 inline __m512 exp_avx512(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(kMinExponent), x);
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(kLog2e));
  const __m512 rounded = _mm512_add_ps(t, _mm512_set1_ps(kRound));
  const __m512 n = _mm512_sub_ps(rounded, _mm512_set1_ps(kRound));
  const __m512 g =
      _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x));
  __m512 p = _mm512_set1_ps(1.0f / 720);
  for (float c : {1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f})
    p = _mm512_fmadd_ps(p, g, _mm512_set1_ps(c));
  const __m512i exponent =
      _mm512_sub_epi32(_mm512_castps_si512(rounded), _mm512_set1_epi32(0x4B400000));
  return _mm512_castsi512_ps(
      _mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(exponent, 23)));
}

#endif

}  // namespace dsmath::cpu::detail
