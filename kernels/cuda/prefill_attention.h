// Causal attention for the step's multi-token sequences (prompts and prompt chunks after a
// cached prefix), flash style: see prefill_attention.cu for the math and the tiling.
#pragma once

#include "kernels/cuda/paged_attention.h"

namespace dsmath::cuda {

// A tile is kPrefillTileQueries consecutive query vectors of one sequence and kv head, counting
// the sequence's queries token-major: query i is token i / group, query head i % group of the
// group (group = heads / kv_heads), so a tile holds whole or partial groups of one or more rows.
constexpr int64_t kPrefillTileQueries = 32;

inline int64_t prefill_tiles(int64_t tokens, int64_t group) {
  return (tokens * group + kPrefillTileQueries - 1) / kPrefillTileQueries;
}

// tiles[3 t .. 3 t + 2] = {first row of the tile's sequence, its tokens, first query of the
// tile}, for t < tile_count; the rows of a sequence are consecutive, at consecutive positions,
// and share one block table. Writes out[r, h] for the rows the tiles cover, leaving the others.
// head_dim at most 256; k, v of the step already written (write_kv).
void prefill_attention(const PagedKV& cache, const StepRows& step, const int32_t* tiles,
                       int64_t tile_count, const float* q, int64_t heads, int64_t kv_heads,
                       int64_t head_dim, float* out, cudaStream_t stream);

}  // namespace dsmath::cuda
