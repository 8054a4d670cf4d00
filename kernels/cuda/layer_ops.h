// The per-token ops of a LLaMA layer around the GEMMs (see layer_ops.cu for the math). Ids and
// positions are device arrays staged once per step; all launch on `stream`.
#pragma once

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

// out[i, :] = table[ids[i] - first_row, :] (bf16 table of `rows` x cols) when inside it, else 0.
void embedding(const bf16_bits* table, int64_t rows, int64_t cols, int64_t first_row,
               const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

// out[r, :] = gamma * (x[r, :] / sqrt(mean(x[r, :]^2) + eps)); gamma is f32 of dim entries.
void rms_norm(const float* x, int64_t rows, int64_t dim, const float* gamma, float eps, float* out,
              cudaStream_t stream);

// Rotates x [tokens, heads, head_dim] in place at positions[t] (HF rotate_half layout);
// inv_freq has head_dim / 2 entries.
void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq, float linear_factor, cudaStream_t stream);

// Splits qkv [tokens, (heads + 2 kv_heads) * head_dim] into q [tokens, heads * head_dim],
// k and v [tokens, kv_heads * head_dim], rotating q and k as rope() does.
void split_qkv_rope(const float* qkv, int64_t tokens, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, const int32_t* positions, const float* inv_freq,
                    float linear_factor, float* q, float* k, float* v, cudaStream_t stream);

}  // namespace dsmath::cuda
