// The AVX512-BF16 path of linear() for bf16 weights:
//
//   y[t, n] = sum over column pairs p, in order, of  W[n, 2p] x[t, 2p] + W[n, 2p+1] x[t, 2p+1]
//   x = hi + lo,   hi = bf16(x),  lo = bf16(x - hi)    (round to nearest even; x - hi is exact)
//
// vdpbf16ps multiplies 16 lanes of bf16 pairs and adds each lane's two products into its f32
// accumulator. Here a lane is a weight row: one register holds pair p of 16 rows, the pair p of
// one token's x is broadcast to all 16 lanes, and each (row, token) sum takes the pairs in order,
// hi then lo at each. W is bf16 in the checkpoint; x is f32, and bf16 alone keeps 8 of its 24
// bits (logits off by ~1e-2), hi + lo ~17 (|x - hi - lo| <= 2^-18 |x|), well inside the f32
// goldens' 1e-3, at two instructions per 32 products: the f32 FMA rate of a CPU without AMX.
// At --matmul-precision medium (set_matmul_precision) lo is left out: x in bf16 as torch and
// llama.cpp take it, twice the products per instruction.
//
// Why rows in the lanes rather than columns: a micro-kernel of 4 registers of rows x 6 tokens
// loads 4 weight vectors and broadcasts 6 four-byte pairs per 24 vdpbf16ps, where one with
// columns in the lanes loaded 4 weight and 6 x vectors (x's block streamed from L2 and held
// the bf16 kernel at ~63% of the bf16 peak; kernels_bench BM_Linear and ARCHITECTURE.md have the
// figures). The price is the layout: a register needs 16 rows' pair p side by side, which the
// row-major checkpoint does not have. So the weights are repacked once at load into "dot-pair
// panels" (pack_for_linear, called by the CPU backend's place()): per 64 rows, per pair, the
// rows' pairs in order, so one micro-kernel reads one panel as one linear stream. A view without
// panels for its chunks (a test, a caller that did not pack) gets each panel packed into
// per-thread scratch per call, which computes the same bits, more slowly.
//
// Batch invariance: every (row, token) sum is its own accumulator lane taking the same
// instructions in the same order whatever the token block, m or thread count. Chunks
// (linear_chunked) sum their pairs apart and are added by the pairwise tree of gemm.h.
#include "kernels/cpu/gemm_bf16.h"

#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/row_groups.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu::detail {

#if DSMATH_HAVE_X86_SIMD

#define DSMATH_AVX512BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

bool cpu_has_avx512_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

namespace {

constexpr int64_t kMaxChunks = 8;
constexpr int64_t kLanes = 16;  // rows per register
constexpr int kPanelRegs = 4;   // registers of rows per panel (and per micro-kernel)
constexpr int64_t kPanelRows = kLanes * kPanelRegs;
constexpr int kTokens = 6;  // tokens per micro-kernel: 4 x 6 accumulators + 4 + hi, lo

// Where the panels of a [rows, cols] weight summed in `chunks` ranges put things, in uint32
// pairs. Panel j holds rows [64 j, 64 j + 64) padded with zero rows to whole registers; within
// it, chunk c's pair p of register v's 16 rows starts at ((c * pairs + p) * regs(j) + v) * 16.
// A chunk of odd width ends with a pair whose second half is zero. pack_bf16_panels stores this
// for the chunks it is given; chunks of even width all share the one-chunk layout.
struct Panels {
  int64_t rows, chunks, pairs;  // pairs per chunk
  int regs(int64_t j) const {
    return int(std::min<int64_t>(kPanelRegs, (rows - j * kPanelRows + kLanes - 1) / kLanes));
  }
  int64_t panel_size() const { return kPanelRows * chunks * pairs; }  // a full panel
  int64_t offset(int64_t j) const { return j * panel_size(); }        // earlier panels are full
};

// 16 vectors of 16 uint32 in, their transpose out: out[i] lane r = in[r] lane i.
DSMATH_AVX512BF16 inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {  // within 128-bit lanes: rows pairwise interleaved
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // r[i + j], 128-bit lane L: column 4L + j of rows i..i+3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int j = 0; j < 4; ++j) {  // a 4 x 4 transpose of 128-bit lanes
    const __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x44);
    const __m512i u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xEE);
    const __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x44);
    const __m512i u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xEE);
    t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
    t[4 + j] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
    t[8 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
    t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Panel j of row-major bf16 rows w ([rows, k], k = chunks * kc) into out, as Panels says.
DSMATH_AVX512BF16 void pack_panel(const uint16_t* w, int64_t k, const Panels& p, int64_t j,
                                  uint32_t* out) {
  const int regs = p.regs(j);
  const int64_t kc = k / p.chunks, row0 = j * kPanelRows;
  for (int v = 0; v < regs; ++v) {
    const int64_t rows_here = std::min<int64_t>(kLanes, p.rows - row0 - v * kLanes);
    for (int64_t c = 0; c < p.chunks; ++c) {
      for (int64_t q = 0; q < p.pairs; q += kLanes) {  // 16 pairs: 32 columns of 16 rows
        const int64_t left = std::clamp<int64_t>(kc - 2 * q, 0, 32);
        const __mmask32 mask = left == 32 ? ~__mmask32(0) : __mmask32((1u << left) - 1u);
        __m512i r[16];
        for (int64_t i = 0; i < kLanes; ++i) {
          r[i] = i < rows_here ? _mm512_maskz_loadu_epi16(
                                     mask, w + (row0 + v * kLanes + i) * k + c * kc + 2 * q)
                               : _mm512_setzero_si512();
        }
        transpose16(r);
        const int64_t n_pairs = std::min<int64_t>(kLanes, p.pairs - q);
        for (int64_t i = 0; i < n_pairs; ++i)
          _mm512_store_si512(out + ((c * p.pairs + q + i) * regs + v) * kLanes, r[i]);
      }
    }
  }
}

// One token's x as bf16 pairs: hi at out[c * pairs + p], lo (split) at out[(chunks + c) * pairs +
// p]; an odd chunk's last pair ends in a zero.
DSMATH_AVX512BF16 void pack_token(const float* x, int64_t chunks, int64_t kc, int64_t pairs,
                                  bool split, uint32_t* out) {
  for (int64_t c = 0; c < chunks; ++c) {
    auto* hi_out = reinterpret_cast<uint16_t*>(out + c * pairs);
    auto* lo_out = reinterpret_cast<uint16_t*>(out + (chunks + c) * pairs);
    for (int64_t k = 0; k < 2 * pairs; k += 16) {
      const int64_t left = std::clamp<int64_t>(kc - k, 0, 16);
      const __m512 v = _mm512_maskz_loadu_ps(__mmask16((1u << left) - 1u), x + c * kc + k);
      const __mmask16 keep = __mmask16((1u << std::min<int64_t>(16, 2 * pairs - k)) - 1u);
      const __m256bh hi = _mm512_cvtneps_pbh(v);
      _mm256_mask_storeu_epi16(hi_out + k, keep, (__m256i)hi);
      if (!split) continue;
      const __m512 hi_f32 =
          _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)hi), 16));
      _mm256_mask_storeu_epi16(lo_out + k, keep,
                               (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(v, hi_f32)));
    }
  }
}

// x packed for the kernel: token t's pairs start at data + t * token_stride.
struct PackedX {
  const uint32_t* data;
  int64_t token_stride;  // (split ? 2 : 1) * chunks * pairs
};

// y[t * ldy + r] for the R x 16 rows of one panel (w: its start; stores stop at `rows` rows)
// and T tokens: per chunk, every accumulator over the chunk's pairs; then the chunks' tree.
// kStream: the panel is read as one prefetched stream (one token, and the first token block of a
// batch, which is what reads the panel from memory); kLater: fetches the next panel into L2.
template <int R, int T, bool kSplit, Fetch F>
DSMATH_AVX512BF16 void micro(const PackedX& x, const uint32_t* w, const Panels& p, int64_t rows,
                             LaterRows& later, float* y, int64_t ldy) {
  constexpr int N = R * T;
  const int64_t pairs = p.pairs, chunks = p.chunks, token_stride = x.token_stride;
  const int64_t lo = chunks * pairs;  // lo's offset in a token's pairs
  __m512 part[kMaxChunks][N];
  for (int64_t c = 0; c < chunks; ++c) {
    __m512 acc[N];
    for (int i = 0; i < N; ++i) acc[i] = _mm512_setzero_ps();
    const uint32_t* wc = w + c * pairs * R * kLanes;
    const uint32_t* xc = x.data + c * pairs;
    for (int64_t q = 0; q < pairs; ++q) {
      if constexpr (F == Fetch::kStream)
        prefetch_stream(w, kStreamAhead, (c * pairs + q) * R * 64, R * 64);
      if constexpr (F == Fetch::kLater) later.step();
      __m512bh wv[R];
      for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_load_si512(wc + (q * R + r) * kLanes);
      for (int t = 0; t < T; ++t) {
        const __m512bh hi = (__m512bh)_mm512_set1_epi32(int(xc[t * token_stride + q]));
        for (int r = 0; r < R; ++r) acc[r * T + t] = _mm512_dpbf16_ps(acc[r * T + t], wv[r], hi);
        if constexpr (kSplit) {
          const __m512bh lo_t = (__m512bh)_mm512_set1_epi32(int(xc[t * token_stride + lo + q]));
          for (int r = 0; r < R; ++r)
            acc[r * T + t] = _mm512_dpbf16_ps(acc[r * T + t], wv[r], lo_t);
        }
      }
    }
    for (int i = 0; i < N; ++i) part[c][i] = acc[i];
  }
  for (int64_t stride = 1; stride < chunks; stride *= 2)  // the pairwise tree of gemm.h
    for (int64_t i = 0; i + stride < chunks; i += 2 * stride)
      for (int j = 0; j < N; ++j) part[i][j] = _mm512_add_ps(part[i][j], part[i + stride][j]);
  for (int r = 0; r < R; ++r) {
    const int64_t left = std::clamp<int64_t>(rows - r * kLanes, 0, kLanes);
    const __mmask16 mask = __mmask16((1u << left) - 1u);
    for (int t = 0; t < T; ++t)
      _mm512_mask_storeu_ps(y + t * ldy + r * kLanes, mask, part[0][r * T + t]);
  }
}

template <int R, bool kSplit, Fetch F>
DSMATH_AVX512BF16 void micro_tokens(int tokens, const PackedX& x, const uint32_t* w,
                                    const Panels& p, int64_t rows, LaterRows& later, float* y,
                                    int64_t ldy) {
  switch (tokens) {
    case 1:
      return micro<R, 1, kSplit, F>(x, w, p, rows, later, y, ldy);
    case 2:
      return micro<R, 2, kSplit, F>(x, w, p, rows, later, y, ldy);
    case 3:
      return micro<R, 3, kSplit, F>(x, w, p, rows, later, y, ldy);
    case 4:
      return micro<R, 4, kSplit, F>(x, w, p, rows, later, y, ldy);
    case 5:
      return micro<R, 5, kSplit, F>(x, w, p, rows, later, y, ldy);
    default:
      return micro<R, kTokens, kSplit, F>(x, w, p, rows, later, y, ldy);
  }
}

// One token block over panel j: the micro-kernel for its register count and token count.
template <bool kSplit, Fetch F>
DSMATH_AVX512BF16 void run_panel(int regs, int tokens, const PackedX& x, const uint32_t* w,
                                 const Panels& p, int64_t rows, LaterRows& later, float* y,
                                 int64_t ldy) {
  switch (regs) {
    case 1:
      return micro_tokens<1, kSplit, F>(tokens, x, w, p, rows, later, y, ldy);
    case 2:
      return micro_tokens<2, kSplit, F>(tokens, x, w, p, rows, later, y, ldy);
    case 3:
      return micro_tokens<3, kSplit, F>(tokens, x, w, p, rows, later, y, ldy);
    default:
      return micro_tokens<kPanelRegs, kSplit, F>(tokens, x, w, p, rows, later, y, ldy);
  }
}

using PanelFn = void (*)(int, int, const PackedX&, const uint32_t*, const Panels&, int64_t,
                         LaterRows&, float*, int64_t);

PanelFn panel_fn(bool split, Fetch fetch) {
  switch (fetch) {
    case Fetch::kStream:
      return split ? run_panel<true, Fetch::kStream> : run_panel<false, Fetch::kStream>;
    case Fetch::kLater:
      return split ? run_panel<true, Fetch::kLater> : run_panel<false, Fetch::kLater>;
    case Fetch::kNone:
      break;
  }
  return split ? run_panel<true, Fetch::kNone> : run_panel<false, Fetch::kNone>;
}

// What pack_bf16_panels stores ahead of the panels (64 bytes, so they stay aligned).
struct alignas(64) PanelsHeader {
  int64_t chunks;
};

// 64-byte aligned uint32 storage, grown and never shrunk (thread_local scratch: no allocation
// per call once warm).
struct AlignedScratch {
  std::vector<uint32_t> storage;
  uint32_t* get(size_t n) {
    if (storage.size() < n + 16) storage.resize(n + 16);
    return reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) &
                                       ~uintptr_t(63));
  }
};

// Packing a 7B checkpoint is page faults more than transposes (3.3M faults, 12 s on 2 cores):
// the panels go in 2 MiB pages where the kernel allows them (transparent huge pages in madvise
// mode) and the rows are faulted in by one call rather than one fault per 4 KiB.
void* allocate_for_panels(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = bytes >= 4 * kHuge ? kHuge : 64;
  void* out = nullptr;
  DSMATH_CHECK(::posix_memalign(&out, align, bytes) == 0, "pack_bf16_panels: out of memory for ",
               bytes, " bytes");
#ifdef MADV_HUGEPAGE
  if (align == kHuge) ::madvise(out, bytes / kHuge * kHuge, MADV_HUGEPAGE);  // a hint: may fail
#endif
  return out;
}

void prefault(const void* data, size_t bytes) {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + bytes;
  [[maybe_unused]] int done = -1;
#ifdef MADV_POPULATE_READ
  done = ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#endif
  if (done != 0) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
}

}  // namespace

std::shared_ptr<const void> pack_bf16_panels(const WeightView& w, int64_t chunks) {
  DSMATH_CHECK(cpu_has_avx512_bf16() && w.dtype == DType::BF16 && w.data != nullptr,
               "pack_bf16_panels: needs AVX512_BF16 and bf16 rows");
  DSMATH_CHECK(chunks >= 1 && chunks <= kMaxChunks && w.cols % chunks == 0,
               "pack_bf16_panels: ", w.cols, " columns do not split into ", chunks, " chunks");
  const Panels p{w.rows, chunks, (w.cols / chunks + 1) / 2};
  const int64_t panels = (w.rows + kPanelRows - 1) / kPanelRows;
  const size_t bytes = sizeof(PanelsHeader) + size_t(panels * p.panel_size()) * sizeof(uint32_t);
  void* out = allocate_for_panels(bytes);
  prefault(w.data, size_t(w.rows * w.cols) * 2);
  new (out) PanelsHeader{chunks};
  uint32_t* data = static_cast<uint32_t*>(out) + sizeof(PanelsHeader) / sizeof(uint32_t);
  const auto* wb = static_cast<const uint16_t*>(w.data);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < panels; ++j) pack_panel(wb, w.cols, p, j, data + p.offset(j));
  return std::shared_ptr<const void>(out, std::free);
}

void linear_avx512_bf16(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                        float* y) {
  DSMATH_CHECK(cpu_has_avx512_bf16() && w.dtype == DType::BF16,
               "linear_avx512_bf16: needs AVX512_BF16 and bf16 weights");
  const int64_t n_out = w.rows, k_dim = w.cols, kc = k_dim / chunks;
  const Panels p{n_out, chunks, (kc + 1) / 2};
  // Panels packed for other chunks serve when both layouts are the one-chunk layout (even
  // chunk widths); otherwise each panel is packed per call from the rows.
  const auto* header = static_cast<const PanelsHeader*>(w.packed);
  const bool packed = header != nullptr && (header->chunks == chunks ||
                                            (kc % 2 == 0 && (k_dim / header->chunks) % 2 == 0));
  DSMATH_CHECK(packed || w.data != nullptr, "linear: a weight of ", n_out, " x ", k_dim,
               " packed for ", header ? header->chunks : 0, " chunks has no rows to read for ",
               chunks);

  const PackedX px{[&] {
                     thread_local AlignedScratch scratch;
                     return scratch.get(size_t(m * (split ? 2 : 1) * chunks * p.pairs));
                   }(),
                   (split ? 2 : 1) * chunks * p.pairs};
  // Packing is ~1% of the products' work; done here, it saves the threads a barrier.
  for (int64_t t = 0; t < m; ++t)
    pack_token(x + t * k_dim, chunks, kc, p.pairs, split,
               const_cast<uint32_t*>(px.data) + t * px.token_stride);

  const auto* raw = static_cast<const uint16_t*>(w.data);
  // Without panels, each thread packs the panel it works on into its part of this (sized here,
  // by the calling thread, so that no call allocates once warm whichever threads take groups).
  thread_local AlignedScratch panel_scratch_storage;
  uint32_t* const panel_scratch =
      packed ? nullptr : panel_scratch_storage.get(size_t(omp_get_max_threads() * p.panel_size()));
  const uint32_t* panels = packed ? reinterpret_cast<const uint32_t*>(header + 1) : nullptr;
  // Later rows are fetched from what the kernel reads: the panels, or the rows it packs from.
  const RowWalk walk{m,
                     kTokens,
                     n_out,
                     kPanelRows,
                     packed ? static_cast<const void*>(panels) : w.data,
                     packed ? chunks * p.pairs * 4 : k_dim * 2};
  walk_row_groups(
      walk, [&](int64_t, int64_t) { return chunks * p.pairs; },
      [&](int64_t t, int64_t tokens, int64_t n0, int64_t n1, Fetch fetch, LaterRows& later) {
        const int64_t j = n0 / kPanelRows;
        const uint32_t* panel = nullptr;
        if (packed) {
          panel = panels + p.offset(j);
        } else {  // packed into this thread's scratch by the group's first token block
          uint32_t* own = panel_scratch + omp_get_thread_num() * p.panel_size();
          if (t == 0) pack_panel(raw, k_dim, p, j, own);
          panel = own;
          if (fetch == Fetch::kStream) fetch = Fetch::kNone;  // the rows were read by the packing
        }
        const PackedX block{px.data + t * px.token_stride, px.token_stride};
        panel_fn(split, fetch)(p.regs(j), int(tokens), block, panel, p, n1 - n0, later,
                               y + t * n_out + n0, n_out);
      });
}

#else  // no x86 SIMD: never chosen

bool cpu_has_avx512_bf16() {
  return false;
}
std::shared_ptr<const void> pack_bf16_panels(const WeightView&, int64_t) {
  DSMATH_CHECK(false, "pack_bf16_panels: not built for this architecture");
  return nullptr;
}
void linear_avx512_bf16(const float*, int64_t, const WeightView&, int64_t, bool, float*) {
  DSMATH_CHECK(false, "linear_avx512_bf16: not built for this architecture");
}

#endif

}  // namespace dsmath::cpu::detail
