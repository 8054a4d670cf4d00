// dsmath-cpu-probe: the physical limits of this CPU, so that benchmark numbers can be read as a
// fraction of what the machine allows rather than only against other programs.
//   dsmath-cpu-probe [--threads T]        (default: OpenMP's thread count)
// Prints one JSON object:
//   read_bandwidth_gbs    multi-threaded streaming read of a 1 GiB buffer (best of 5). Decode at
//                         batch 1 reads every weight once per token, so this bounds it.
//   peak_bf16_gflops      vdpbf16ps zmm, registers only, all threads (best of 3): bounds prefill.
//   peak_f32_fma_gflops   vfmadd231ps zmm (ymm without AVX-512), likewise.
//   peak_amx_bf16_gflops  tdpbf16ps on tile registers, likewise.
//   cpu_flags, threads.
// A key the CPU cannot measure is left out. Every kernel is compiled for its ISA through target
// attributes and runs only when the CPU reports that ISA, so the binary runs on any x86-64.
#include <cpuid.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "stream_read.h"

// GCC 12 warns about the intrinsics' own placeholders (GCC bug 105593), as in kernels/cpu/simd.h.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace {

struct Flags {
  bool avx2, fma, avx512f, avx512_bf16, amx_bf16;
};

Flags cpu_flags() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  Flags f{};
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");  // also checks that the OS saves zmm state
  // CPUID leaf 7: subleaf 1 EAX bit 5 = AVX512_BF16; subleaf 0 EDX bit 22 = AMX-BF16.
  if (f.avx512f && __get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avx512_bf16 = (a >> 5) & 1;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) f.amx_bf16 = (d >> 22) & 1;
  return f;
}

// Linux hands out the 8 KiB AMX tile state only on request (ARCH_REQ_XCOMP_PERM,
// XFEATURE_XTILEDATA); without it the first tile instruction is a SIGILL.
bool amx_permitted() {
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---- streaming read (stream_read.h) -------------------------------------------------------------
double read_bandwidth_gbs(int threads) {
  const size_t bytes = size_t(1) << 30, n = bytes / sizeof(float);
  const size_t chunk = n / size_t(threads) / 64 * 64;  // whole 256-byte steps per thread
  float* buf = static_cast<float*>(std::aligned_alloc(4096, bytes));
  // First touch by the thread that later reads the chunk (its NUMA node, pages really mapped).
#pragma omp parallel for schedule(static)
  for (int t = 0; t < threads; ++t)
    std::fill(buf + size_t(t) * chunk, buf + size_t(t + 1) * chunk, 1.0f);
  double best = 1e30;
  volatile uint32_t sink = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now_s();
    uint32_t total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int t = 0; t < threads; ++t)
      total += dsmath::bench::stream_sum(buf + size_t(t) * chunk, chunk * sizeof(float));
    best = std::min(best, now_s() - t0);
    sink = sink + total;
  }
  std::free(buf);
  return double(chunk * size_t(threads) * sizeof(float)) / best / 1e9;
}

// ---- peak arithmetic: 16 independent accumulators in registers, nothing from memory -----------
// Operands are small (bf16 0x3a83 is about 0.001; fma adds 1e-7) so that the sums stay normal
// floats: neither infinities nor denormals, which some CPUs handle slowly.
constexpr long kIters = 1 << 23;
#define REP16(X) \
  X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

__attribute__((target("avx512f,avx512bf16"))) float bf16_kernel(float x) {
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3a83), b = (__m512bh)_mm512_set1_epi16(0x3a83);
#define DECL(i) __m512 c##i = _mm512_set1_ps(x + i);
#define STEP(i) c##i = _mm512_dpbf16_ps(c##i, a, b);
#define ADD(i) s = _mm512_add_ps(s, c##i);
  REP16(DECL)
  for (long it = 0; it < kIters; ++it) {
    REP16(STEP)
  }
  __m512 s = _mm512_setzero_ps();
  REP16(ADD)
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f"))) float fma512_kernel(float x) {
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
#undef STEP
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
  REP16(DECL)
  for (long it = 0; it < kIters; ++it) {
    REP16(STEP)
  }
  __m512 s = _mm512_setzero_ps();
  REP16(ADD)
  return _mm512_reduce_add_ps(s);
}

// AVX2 has 16 ymm registers: 12 accumulators leave room for the two operands.
__attribute__((target("avx2,fma"))) float fma256_kernel(float x) {
  const __m256 a = _mm256_set1_ps(1.0f), b = _mm256_set1_ps(1e-7f);
  __m256 c[12];
  for (int i = 0; i < 12; ++i) c[i] = _mm256_set1_ps(x + float(i));
  for (long it = 0; it < kIters; ++it)
    for (int i = 0; i < 12; ++i) c[i] = _mm256_fmadd_ps(c[i], a, b);
  float t[8], s = 0;
  for (int i = 0; i < 12; ++i) {
    _mm256_storeu_ps(t, c[i]);
    s += t[0];
  }
  return s;
}

// AMX: C tiles 0-3 (16x16 f32) += A tiles 4-5 (16x32 bf16) x B tiles 6-7, four independent chains.
constexpr long kAmxIters = 1 << 20;
__attribute__((target("amx-tile,amx-bf16"))) float amx_kernel(float x) {
  alignas(64) unsigned char cfg[64] = {};
  cfg[0] = 1;  // palette 1: 8 tiles, each up to 16 rows x 64 bytes
  for (int t = 0; t < 8; ++t) {
    cfg[16 + 2 * t] = 64;  // colsb[t] (uint16 little-endian)
    cfg[48 + t] = 16;      // rows[t]
  }
  _tile_loadconfig(cfg);
  alignas(64) uint16_t src[16 * 32];
  std::fill(src, src + 16 * 32, uint16_t(0x3a83));
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, src, 64);
  _tile_loadd(5, src, 64);
  _tile_loadd(6, src, 64);
  _tile_loadd(7, src, 64);
  for (long it = 0; it < kAmxIters; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0] + x;
}

// Runs `kernel` on every thread at once; returns the best of 3 in GFLOP/s.
double peak_gflops(float (*kernel)(float), double flops_per_thread, int threads) {
  double best = 1e30;
  volatile float sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    float total = 0;
    const double t0 = now_s();
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += kernel(float(omp_get_thread_num()));
    best = std::min(best, now_s() - t0);
    sink = sink + total;
  }
  return flops_per_thread * threads / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--threads") == 0) threads = std::max(1, std::atoi(argv[++i]));
  omp_set_num_threads(threads);
  const Flags f = cpu_flags();
  nlohmann::ordered_json j;
  j["threads"] = threads;
  j["cpu_flags"] = {{"avx2", f.avx2},
                    {"avx512f", f.avx512f},
                    {"avx512_bf16", f.avx512_bf16},
                    {"amx_bf16", f.amx_bf16}};
  j["read_bandwidth_gbs"] = read_bandwidth_gbs(threads);
  if (f.avx512_bf16) j["peak_bf16_gflops"] = peak_gflops(bf16_kernel, kIters * 16.0 * 64, threads);
  if (f.avx512f)
    j["peak_f32_fma_gflops"] = peak_gflops(fma512_kernel, kIters * 16.0 * 32, threads);
  else if (f.avx2 && f.fma)
    j["peak_f32_fma_gflops"] = peak_gflops(fma256_kernel, kIters * 12.0 * 16, threads);
  if (f.amx_bf16 && amx_permitted())
    j["peak_amx_bf16_gflops"] =
        peak_gflops(amx_kernel, kAmxIters * 4.0 * 2 * 16 * 16 * 32, threads);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
