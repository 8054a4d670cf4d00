// How the SIMD GEMMs (gemm.cpp, gemm_bf16.cpp) walk a weight, and how they keep memory busy.
//
// The rows are cut into groups; a thread takes a group and passes every token block over it,
// so W is read from memory once per call and the later token blocks find it in L2. Read that
// way, memory works only while a group's first token block runs: at batch 16 of the 7B shape
// two thirds of the time computed on cached rows while the next group waited. So:
//   - the first token block prefetches its own rows as one stream (prefetch_stream), which is
//     all batch-1 decode does;
//   - the last two token blocks fetch the thread's next group into L2 a few lines per step
//     (LaterRows), so that group's first block finds its rows there.
// Groups are handed out in order, dynamically (cores shared with other work, or at different
// clocks, still finish together), and each thread claims its next group before it computes the
// current one, so it knows what to fetch. None of this changes what is summed, or in what order.
#pragma once

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cpu/simd.h"

#if DSMATH_HAVE_X86_SIMD
namespace dsmath::cpu::detail {

// The rows a thread reads next, fetched a few lines per step() while it computes on rows already
// in cache. T1 (L2), not T0: the lines are needed a group later, and in L1 they would push out
// the block of x in use (T0 was no faster in kernels_bench and varied more).
struct LaterRows {
  uintptr_t at = 0, end = 0;  // the span still to fetch
  int64_t bytes = 0;          // per step(), a multiple of 64
  void step() {
    if (at >= end) return;
    for (int64_t b = 0; b < bytes; b += 64)
      _mm_prefetch(reinterpret_cast<const char*>(at + uintptr_t(b)), _MM_HINT_T1);
    at += uintptr_t(bytes);
  }
};

// What a token block does besides its products.
enum class Fetch {
  kNone,    // nothing: a middle block, its rows in L2
  kStream,  // the first block: reads its own rows as one prefetched stream
  kLater,   // one of the last two: fetches the rows of the thread's next group
};

struct RowWalk {
  int64_t m = 0, tokens_per_block = 0;  // tokens, at most tokens_per_block a block
  int64_t rows = 0, row_group = 0;      // weight rows, row_group of them a group
  const void* w = nullptr;              // rows of row_bytes, contiguous
  int64_t row_bytes = 0;
};

// Calls block(t, tokens, n0, n1, fetch, later) for tokens [t, t + tokens) x rows [n0, n1) of
// every token block of every group. steps(tokens, rows) is how many times the kernel calls
// later.step() for one block of `tokens` over `rows` rows.
template <class Steps, class Block>
void walk_row_groups(const RowWalk& rw, Steps steps, Block block) {
  const int64_t groups = (rw.rows + rw.row_group - 1) / rw.row_group;
  const int64_t token_blocks = (rw.m + rw.tokens_per_block - 1) / rw.tokens_per_block;
  const int64_t first_later = std::max<int64_t>(1, token_blocks - 2);
  const auto base = reinterpret_cast<uintptr_t>(rw.w);
  // One token block (batch-1 decode) has nothing to fetch later: it claims one group at a time.
  const bool ahead = token_blocks > 1;
  std::atomic<int64_t> claims{0};
  const auto claim = [&] { return claims.fetch_add(1, std::memory_order_relaxed); };
#pragma omp parallel
  {
    int64_t g = claim();
    while (g < groups) {
      const int64_t next = ahead ? claim() : groups;
      const int64_t n0 = g * rw.row_group, n1 = std::min(rw.rows, n0 + rw.row_group);
      LaterRows later;
      if (next < groups) {
        const int64_t r0 = next * rw.row_group, r1 = std::min(rw.rows, r0 + rw.row_group);
        later.at = base + uintptr_t(r0 * rw.row_bytes);
        later.end = base + uintptr_t(r1 * rw.row_bytes);
        int64_t n_steps = 0;
        for (int64_t tb = first_later; tb < token_blocks; ++tb)
          n_steps += steps(std::min(rw.tokens_per_block, rw.m - tb * rw.tokens_per_block), n1 - n0);
        n_steps = std::max<int64_t>(1, n_steps);
        const int64_t lines = (int64_t(later.end - later.at) / 64 + n_steps - 1) / n_steps;
        later.bytes = 64 * std::max<int64_t>(1, lines);
      }
      for (int64_t tb = 0; tb < token_blocks; ++tb) {
        const int64_t t = tb * rw.tokens_per_block;
        const Fetch fetch = tb == 0             ? Fetch::kStream
                            : tb >= first_later ? Fetch::kLater
                                                : Fetch::kNone;
        block(t, std::min(rw.tokens_per_block, rw.m - t), n0, n1, fetch, later);
      }
      g = ahead ? next : claim();
    }
  }
}

// Micro-kernel calls over `rows` rows taken `per_call` at a time, the ragged end one by one.
constexpr int64_t micro_calls(int64_t rows, int64_t per_call) {
  return rows / per_call + rows % per_call;
}

}  // namespace dsmath::cpu::detail
#endif
