// The AMX-BF16 path of linear() for bf16 weights (Intel Sapphire Rapids and later): the kernel is
// gemm_amx.inc, included twice here, once over the tile instructions and once over a C++ model of
// them (EmulatedTiles) that the tests run on any CPU.
//
//   y[t, n] = sum_k W[n, k] * (hi[t, k] + lo[t, k])   hi = bf16(x), lo = bf16(x - hi)
//
// as gemm_bf16.cpp splits x (f32-grade, within the f32 goldens), with W as the tiles' A operand
// straight from the checkpoint mapping: A is row-major 16 rows x 32 bf16, which is how a weight's
// rows are stored, so nothing is repacked and the weights stay in the mmap. x goes into the
// B operand, whose layout (column pairs x tokens) is packed per call.
//
// Whether the tile instructions compute what EmulatedTiles computes is checked once per process
// before the path is used (amx_self_check): a tile path that disagrees with the emulation by more
// than rounding is switched off with a message, and linear() keeps the AVX512-BF16 path.
#include "kernels/cpu/gemm_amx.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/core/dtype.h"
#include "common/core/error.h"
#include "kernels/cpu/row_groups.h"
#include "kernels/cpu/simd.h"

#if DSMATH_HAVE_X86_SIMD
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace dsmath::cpu::detail {

#if DSMATH_HAVE_X86_SIMD

namespace {

constexpr int64_t kTile = 16;            // rows of every tile; tokens of a B or C tile
constexpr int64_t kBlock = 32;           // bf16 columns of an A tile row (64 bytes)
constexpr int64_t kTileElems = 512;      // bf16 in a 1 KiB tile
constexpr int64_t kTokensPerBlock = 32;  // two B tiles
constexpr int64_t kBatchRowGroup = 64;   // rows a group when m > 1 (a multiple of 32)
constexpr int64_t kMaxChunks = 8;

// What tdpbf16ps and the tile moves compute, per the Intel SDM: for each C element, per column
// pair, two fused multiply-adds rounded to nearest even, bf16 inputs that are denormal read as
// zero, denormal results flushed to zero. Tiles are per thread, as the hardware's are.
struct EmulatedTiles {
  struct State {
    alignas(64) unsigned char tile[8][1024];
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static void start() {}
  static void finish() {}
  template <int T>
  static void zero() {
    std::memset(state().tile[T], 0, 1024);
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r)
      std::memcpy(state().tile[T] + 64 * r, static_cast<const unsigned char*>(p) + r * stride, 64);
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    for (int r = 0; r < 16; ++r)
      std::memcpy(static_cast<unsigned char*>(p) + r * stride, state().tile[T] + 64 * r, 64);
  }
  static float bf16_daz(uint16_t h) { return (h & 0x7f80u) == 0 ? 0.0f : bf16_to_f32(h); }
  static float ftz(float v) {
    return std::fpclassify(v) == FP_SUBNORMAL ? std::copysign(0.0f, v) : v;
  }
  template <int C, int A, int B>
  static void dot() {
    State& s = state();
    float c[16][16];
    uint16_t a[16][32], b[16][32];
    std::memcpy(c, s.tile[C], 1024);
    std::memcpy(a, s.tile[A], 1024);
    std::memcpy(b, s.tile[B], 1024);
    for (int i = 0; i < 16; ++i)
      for (int p = 0; p < 16; ++p)
        for (int j = 0; j < 16; ++j) {
          c[i][j] = ftz(std::fma(bf16_daz(a[i][2 * p]), bf16_daz(b[p][2 * j]), c[i][j]));
          c[i][j] = ftz(std::fma(bf16_daz(a[i][2 * p + 1]), bf16_daz(b[p][2 * j + 1]), c[i][j]));
        }
    std::memcpy(s.tile[C], c, 1024);
  }
};

}  // namespace

namespace emulated {
using Tiles = EmulatedTiles;
#include "kernels/cpu/gemm_amx.inc"
}  // namespace emulated

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16")
#endif
namespace amx {

// The 64-byte LDTILECFG operand: palette 1, all eight tiles 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// The tile instructions. GCC's intrinsics are asm statements that name the tile in their text
// (so each tile number is spelled out) and tell the compiler nothing about the memory they read
// or write: the barriers keep stores to a buffer before the tile load of it, and reads of a
// buffer after the tile store to it.
#define DSMATH_EACH_TILE(op) op(0) op(1) op(2) op(3) op(4) op(5) op(6) op(7)
struct Tiles {
  static void start() {
    static const TileConfig config;
    _tile_loadconfig(&config);
  }
  static void finish() { _tile_release(); }
  template <int T>
  static void zero() {
#define DSMATH_ZERO(i) \
  if constexpr (T == i) _tile_zero(i);
    DSMATH_EACH_TILE(DSMATH_ZERO)
#undef DSMATH_ZERO
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    asm volatile("" ::: "memory");
#define DSMATH_LOAD(i) \
  if constexpr (T == i) _tile_loadd(i, p, stride);
    DSMATH_EACH_TILE(DSMATH_LOAD)
#undef DSMATH_LOAD
  }
  template <int T>
  static void store(void* p, int64_t stride) {
#define DSMATH_STORE(i) \
  if constexpr (T == i) _tile_stored(i, p, stride);
    DSMATH_EACH_TILE(DSMATH_STORE)
#undef DSMATH_STORE
    asm volatile("" ::: "memory");
  }
  template <int C, int A, int B>
  static void dot() {
    constexpr bool kListed = (C == 0 && A == 4 && B == 6) || (C == 1 && A == 5 && B == 6) ||
                             (C == 2 && A == 4 && B == 7) || (C == 3 && A == 5 && B == 7) ||
                             (C == 0 && A == 4 && B == 7) || (C == 1 && A == 5 && B == 7);
    static_assert(kListed, "spell out the tdpbf16ps of this tile combination here");
    if constexpr (C == 0 && A == 4 && B == 6) _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 1 && A == 5 && B == 6) _tile_dpbf16ps(1, 5, 6);
    if constexpr (C == 2 && A == 4 && B == 7) _tile_dpbf16ps(2, 4, 7);
    if constexpr (C == 3 && A == 5 && B == 7) _tile_dpbf16ps(3, 5, 7);
    if constexpr (C == 0 && A == 4 && B == 7) _tile_dpbf16ps(0, 4, 7);
    if constexpr (C == 1 && A == 5 && B == 7) _tile_dpbf16ps(1, 5, 7);
  }
};
#undef DSMATH_EACH_TILE

#include "kernels/cpu/gemm_amx.inc"

}  // namespace amx
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace {

// CPUID leaf 7 EDX: bit 22 AMX-BF16, bit 24 AMX-TILE; XCR0 bits 17-18: the OS saves tile state.
bool cpu_reports_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 22) & 1u) || !((d >> 24) & 1u)) return false;
  if (!(__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE))) return false;
  unsigned lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((lo >> 17) & 3u) == 3u;
}

// Linux hands out the 8 KiB of tile data per thread only on request (once per process); without
// it the first tile instruction is a SIGILL.
bool request_tile_permission() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// The tile path against the emulation on odd shapes (ragged rows and columns, 1 and 2 B tiles,
// chunks, both precisions): within a few f32 roundings of each other, or the path stays off.
bool amx_self_check() {
  const int64_t cases[][4] = {{1, 45, 100, 2}, {19, 70, 96, 1}, {40, 33, 160, 4}};
  for (const auto& cs : cases)
    for (bool split : {true, false}) {
      const int64_t m = cs[0], n = cs[1], k = cs[2], chunks = cs[3];
      std::vector<float> x(size_t(m * k)), a(size_t(m * n)), e(size_t(m * n));
      std::vector<uint16_t> w(size_t(n * k));
      uint32_t s = 12345;
      const auto next = [&s] {
        s = s * 1664525u + 1013904223u;
        return float(s >> 8) / 16777216.0f - 0.5f;
      };
      for (auto& v : x) v = next();
      for (auto& v : w) v = f32_to_bf16(next());
      const WeightView wv{w.data(), DType::BF16, n, k};
      amx::linear(x.data(), m, wv, chunks, split, a.data());
      emulated::linear(x.data(), m, wv, chunks, split, e.data());
      for (size_t i = 0; i < a.size(); ++i)
        if (!(std::fabs(a[i] - e[i]) <= 1e-5f * (1.0f + std::fabs(e[i])))) {
          std::fprintf(stderr,
                       "dsmath: the AMX tile path disagrees with its emulation (m %ld, n %ld, "
                       "k %ld, %ld chunks, element %zu: %g against %g); linear() will not use "
                       "it\n",
                       long(m), long(n), long(k), long(chunks), i, double(a[i]), double(e[i]));
          return false;
        }
    }
  return true;
}

}  // namespace

bool cpu_has_amx_bf16() {
  static const bool has = cpu_reports_amx_bf16() && request_tile_permission() && amx_self_check();
  return has;
}

void linear_amx(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                float* y) {
  DSMATH_CHECK(cpu_has_amx_bf16() && w.dtype == DType::BF16,
               "linear_amx: needs AMX-BF16 and bf16 weights");
  amx::linear(x, m, w, chunks, split, y);
}

void linear_amx_emulated(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                         float* y) {
  DSMATH_CHECK(w.dtype == DType::BF16, "linear_amx_emulated: needs bf16 weights");
  emulated::linear(x, m, w, chunks, split, y);
}

#else  // no x86: never chosen

bool cpu_has_amx_bf16() {
  return false;
}
void linear_amx(const float*, int64_t, const WeightView&, int64_t, bool, float*) {
  DSMATH_CHECK(false, "linear_amx: not built for this architecture");
}
void linear_amx_emulated(const float*, int64_t, const WeightView&, int64_t, bool, float*) {
  DSMATH_CHECK(false, "linear_amx_emulated: not built for this architecture");
}

#endif

}  // namespace dsmath::cpu::detail
