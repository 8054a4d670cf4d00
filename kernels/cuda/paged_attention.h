// Attention over the paged KV cache, for the step's single-token (decode) rows: see
// paged_attention.cu for the math; sequences with more new tokens go to prefill_attention.h.
// The cache of one layer is [num_blocks][block_size][kv_heads * head_dim] keys and the same for
// values, f32 or bf16; a row of the step finds its blocks at tables[table_offset[row]] (device
// arrays staged once per step).
#pragma once

#include "kernels/cuda/launch.h"

#ifdef __CUDACC__
#include <cuda_bf16.h>
#endif

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

// Split-K: how a decode launch splits each row's keys. A step whose longest decode context is
// at most kSplitAbove keys runs one pass per (row, head), as do steps with so many rows that
// rows x heads blocks fill the GPU many times over; otherwise the keys go in `partitions`
// partitions of `partition_keys` keys, one block each, merged by a second kernel. Both are
// powers of two (times 256 keys) that depend on the row count, heads and a power-of-two bucket
// of the longest context only, so a graph of the launch serves every step of that bucket.
struct DecodeSplit {
  int32_t partitions = 1;      // 1: one pass, no scratch, no merge
  int64_t partition_keys = 0;  // keys per partition when partitions > 1
};
constexpr int64_t kSplitAbove = 512;
DecodeSplit decode_split(int64_t rows, int64_t heads, int64_t max_kv_len);
// Floats of scratch decode_attention needs for `rows` rows under `split` (0 when not split).
int64_t decode_scratch_floats(int64_t rows, int64_t heads, int64_t head_dim, DecodeSplit split);

// For the `count` rows listed in decode_rows (each the one new token of its sequence):
// out[r, h] = softmax_j(q[r, h] . k[j, g(h)] / sqrt(d)) v[j, g(h)] over j = 0 .. positions[r],
// g(h) = h / (heads / kv_heads). head_dim at most 256. Every decode row's context must be at
// most split.partitions * split.partition_keys keys when split; scratch holds
// decode_scratch_floats(count, ...) floats (unused when not split). Other rows of out are left.
void decode_attention(const PagedKV& cache, const StepRows& step, const int32_t* decode_rows,
                      int64_t count, DecodeSplit split, const float* q, int64_t heads,
                      int64_t kv_heads, int64_t head_dim, float* scratch, float* out,
                      cudaStream_t stream);

#ifdef __CUDACC__
// Device helpers of the attention kernels (paged_attention.cu, prefill_attention.cu).
namespace paged {

constexpr int kMaxHeadDim = 256;

__device__ inline float load(const float* p) {
  return *p;
}
__device__ inline float load(const __nv_bfloat16* p) {
  return __bfloat162float(*p);
}

__device__ inline int64_t smaller(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Where key j of a sequence whose block table starts at tables[table_offset] lives.
__device__ inline int64_t slot_of(const StepRows& step, int32_t table_offset, int64_t j,
                                  int32_t block_size) {
  const int32_t block = step.tables[table_offset + j / block_size];
  return int64_t(block) * block_size + j % block_size;
}

}  // namespace paged
#endif

}  // namespace dsmath::cuda
