// Internal to the CPU kernels: run-time ISA selection and the few AVX2 helpers several
// kernels share. Nothing here is compiled with -mavx2; AVX2 code lives in functions marked
// DSMATH_AVX2 and runs only after cpu_has_avx2() said yes, so one binary serves any x86-64
// machine (and other architectures through the portable paths).
#pragma once

#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DSMATH_HAVE_X86_SIMD 1
// GCC 12 flags the intrinsics' own `__m512i __Y = __Y;` placeholders as uninitialized when
// they are inlined into target("avx512f") functions (GCC bug 105593, fixed in 13).
#if defined(__clang__)
#include <immintrin.h>
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
#define DSMATH_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DSMATH_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#else
#define DSMATH_HAVE_X86_SIMD 0
#endif

namespace dsmath::cpu::detail {

// Instruction-set tiers, checked once per process: AVX2 means AVX2 + FMA + F16C, AVX512
// adds AVX-512F. DSMATH_KERNELS_ISA=portable|avx2 in the environment caps the tier (to
// compare paths on one machine, or to rule one out when chasing a numerical difference).
enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };
Isa cpu_isa();
Isa hardware_isa();  // what the CPU has, ignoring DSMATH_KERNELS_ISA
inline bool cpu_has_avx2() {
  return cpu_isa() >= Isa::Avx2;
}

#if DSMATH_HAVE_X86_SIMD
// Prefetches `bytes` of a weight's rows read as one linear stream: the span starting `ahead` +
// `consumed` bytes past `rows` (the rows of a weight are contiguous, so R rows read in lockstep
// are one span of R * row bytes). Used where the hardware prefetchers fall behind:
// - batch-1 decode and the first token block of a batch on AVX-512 (gemm.cpp): eight rows in
//   lockstep are eight streams, which an EPYC Zen 5 core's prefetchers followed at ~30 GB/s for
//   two cores where one linear stream ran at ~40; the kernel takes two rows at a time,
//   kStreamAhead on, handed out kStreamRowGroup rows at a time when m is 1;
// - the same on AVX512-BF16 (gemm_bf16.cpp), over a 64-row panel, which is one stream already;
// - short rows on AVX2 (gemm.cpp): streams a few hundred bytes long;
// - the AMX kernel (gemm_amx.inc), a call's next 32 rows into L2 (kHint _MM_HINT_T1).
constexpr uintptr_t kStreamAhead = 64 * 1024;  // 32 and 128 KiB: no better
constexpr int64_t kStreamRowGroup = 96;        // 48 and 192: no better
template <int kHint = _MM_HINT_T0>
inline void prefetch_stream(const void* rows, uintptr_t ahead, int64_t consumed, int64_t bytes) {
  // As an integer: past the last rows the address is beyond the weight (a prefetch never
  // faults, but a pointer may not point there).
  const uintptr_t at = reinterpret_cast<uintptr_t>(rows) + ahead + uintptr_t(consumed);
  for (int64_t b = 0; b < bytes; b += 64)
    _mm_prefetch(reinterpret_cast<const char*>(at + uintptr_t(b)),
                 static_cast<decltype(_MM_HINT_T0)>(kHint));
}

// Sum of the 8 lanes in a fixed order, so every caller rounds the same way.
DSMATH_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

DSMATH_AVX2 inline float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
#endif

// Portable dot product: 8 independent partial sums, which the compiler can vectorize
// without -ffast-math (a single running sum would force serial adds).
inline float dot_portable(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace dsmath::cpu::detail
