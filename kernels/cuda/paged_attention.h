// Attention over the paged KV cache (see paged_attention.cu for the math). The cache of one
// layer is [num_blocks][block_size][kv_heads * head_dim] keys and the same for values, f32 or
// bf16; a row of the step finds its blocks at tables[table_offset[row]] (device arrays staged
// once per step).
#pragma once

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

struct PagedKV {
  void* keys;    // this layer's key pool
  void* values;  // this layer's value pool
  bool bf16;     // element type: bf16 when true, f32 otherwise
  int32_t block_size;
};

struct StepRows {
  int64_t rows;                 // tokens of the step
  const int32_t* positions;     // [rows]
  const int32_t* table_offset;  // [rows]: where the row's block table starts in `tables`
  const int32_t* tables;        // the step's block tables, concatenated
};

// Stores k, v ([rows][kv_heads * head_dim]) at each row's position.
void write_kv(const PagedKV& cache, const StepRows& step, const float* k, const float* v,
              int64_t kv_width, cudaStream_t stream);

// out[r, h] = softmax_j(q[r, h] . k[j, g(h)] / sqrt(d)) v[j, g(h)] over the row's positions
// j = 0 .. positions[r] (causal), g(h) = h / (heads / kv_heads). head_dim at most 256.
void paged_attention(const PagedKV& cache, const StepRows& step, const float* q, int64_t heads,
                     int64_t kv_heads, int64_t head_dim, float* out, cudaStream_t stream);

}  // namespace dsmath::cuda
