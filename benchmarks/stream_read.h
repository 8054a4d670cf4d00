// A streaming read of memory as fast as the CPU allows: the bound for batch-1 decode, which reads
// every weight once per token (dsmath-cpu-probe reads a buffer of its own; dsmath-bench-decode
// --read-bound reads the model's weights themselves). Four independent integer sums, so that
// neither the adds nor any float assist (weights read as floats can be denormal) limits the loop,
// only memory. Each kernel is compiled for its ISA through a target attribute and chosen at run
// time, so the binary runs on any x86-64 (and elsewhere, on the portable loop).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
// GCC 12 warns about the intrinsics' own placeholders (GCC bug 105593), as in kernels/cpu/simd.h.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace dsmath::bench {

constexpr size_t kStreamStep = 256;  // bytes per loop step; stream_sum reads whole steps only

#if defined(__x86_64__)
__attribute__((target("avx512f"))) inline uint32_t stream_sum_avx512(const std::byte* p,
                                                                     size_t steps) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < steps * kStreamStep; i += kStreamStep) {
    s0 = _mm512_add_epi32(s0, _mm512_loadu_si512(p + i));
    s1 = _mm512_add_epi32(s1, _mm512_loadu_si512(p + i + 64));
    s2 = _mm512_add_epi32(s2, _mm512_loadu_si512(p + i + 128));
    s3 = _mm512_add_epi32(s3, _mm512_loadu_si512(p + i + 192));
  }
  return uint32_t(_mm512_reduce_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(s0, s1), _mm512_add_epi32(s2, s3))));
}

__attribute__((target("avx2"))) inline uint32_t stream_sum_avx2(const std::byte* p, size_t steps) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < steps * kStreamStep; i += kStreamStep) {
    const auto* q = reinterpret_cast<const __m256i*>(p + i);
    s0 = _mm256_add_epi32(s0, _mm256_add_epi32(_mm256_loadu_si256(q), _mm256_loadu_si256(q + 1)));
    s1 = _mm256_add_epi32(s1,
                          _mm256_add_epi32(_mm256_loadu_si256(q + 2), _mm256_loadu_si256(q + 3)));
    s2 = _mm256_add_epi32(s2,
                          _mm256_add_epi32(_mm256_loadu_si256(q + 4), _mm256_loadu_si256(q + 5)));
    s3 = _mm256_add_epi32(s3,
                          _mm256_add_epi32(_mm256_loadu_si256(q + 6), _mm256_loadu_si256(q + 7)));
  }
  uint32_t t[8];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(t),
                      _mm256_add_epi32(_mm256_add_epi32(s0, s1), _mm256_add_epi32(s2, s3)));
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#endif

inline uint32_t stream_sum_portable(const std::byte* p, size_t steps) {
  uint64_t s[4] = {};
  for (size_t i = 0; i < steps * kStreamStep; i += 32)
    for (int j = 0; j < 4; ++j) {
      uint64_t v;
      std::memcpy(&v, p + i + 8 * j, 8);
      s[j] += v;
    }
  return uint32_t(s[0] + s[1] + s[2] + s[3]);
}

// Reads [p, p + bytes / kStreamStep * kStreamStep) once; the sum only keeps the loads alive.
inline uint32_t stream_sum(const void* p, size_t bytes) {
  const auto* b = static_cast<const std::byte*>(p);
  const size_t steps = bytes / kStreamStep;
#if defined(__x86_64__)
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx512) return stream_sum_avx512(b, steps);
  if (avx2) return stream_sum_avx2(b, steps);
#endif
  return stream_sum_portable(b, steps);
}

}  // namespace dsmath::bench
