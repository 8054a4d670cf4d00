// Per-token ops of a LLaMA layer, the same math as kernels/cpu (norm.h, rope.h, embedding.h):
//   embedding: out[i] = bf16_to_f32(table[ids[i] - first_row])   (0 for ids of other ranks)
//   rms_norm:  out = gamma * (x * inv),  inv = 1 / sqrt(sum(x^2) / dim + eps)   (HF's order:
//              normalize, then scale by the weight; one block per row, f32 throughout)
//   rope:      angle = (pos / linear_factor) * inv_freq[j]                     for j < d/2
//              x'[j]       = x[j] * cos(angle) - x[j + d/2] * sin(angle)
//              x'[j + d/2] = x[j + d/2] * cos(angle) + x[j] * sin(angle)
//   split_qkv_rope: qkv = [tokens, (heads + 2 kv_heads) head_dim], the stacked q/k/v GEMM's
//              output, split into q (rotated as rope), k (rotated) and v (copied)
// cosf/sinf/sqrtf are the IEEE-accurate ones (no fast math): within 2 ulp of the CPU's.
#include <cuda_bf16.h>

#include "kernels/cuda/layer_ops.h"

namespace dsmath::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void embedding_kernel(const __nv_bfloat16* table, int64_t rows, int64_t cols,
                                 int64_t first_row, const int32_t* ids, int64_t n, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  const int64_t local = int64_t(ids[i / cols]) - first_row, c = i % cols;
  out[i] = local >= 0 && local < rows ? __bfloat162float(table[local * cols + c]) : 0.0f;
}

// One block per row: a block-wide sum of squares, then the scaled row.
__global__ void rms_norm_kernel(const float* x, int64_t dim, const float* gamma, float eps,
                                float* out) {
  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* yr = out + int64_t(blockIdx.x) * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  for (int offset = 16; offset > 0; offset /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, offset);
  __shared__ float warp_sums[kThreads / 32];
  __shared__ float inv;
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < int(blockDim.x / 32); ++w) total += warp_sums[w];
    inv = 1.0f / sqrtf(total / float(dim) + eps);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = gamma[i] * (xr[i] * inv);
}

__device__ inline void rotate(float* v, int64_t j, int64_t half, float angle) {
  const float c = cosf(angle), s = sinf(angle);
  const float x1 = v[j], x2 = v[j + half];
  v[j] = x1 * c - x2 * s;
  v[j + half] = x2 * c + x1 * s;
}

// One thread per (token, head, j < d/2) pair.
__global__ void rope_kernel(float* x, int64_t tokens, int64_t heads, int64_t head_dim,
                            const int32_t* positions, const float* inv_freq, float linear_factor) {
  const int64_t half = head_dim / 2;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const int64_t t = i / (heads * half), h = (i / half) % heads, j = i % half;
  rotate(x + (t * heads + h) * head_dim, j, half,
         (float(positions[t]) / linear_factor) * inv_freq[j]);
}

// One thread per (token, head slot, j < d/2) pair; slots [0, heads) are q's heads, then k's,
// then v's kv_heads.
__global__ void split_qkv_rope_kernel(const float* qkv, int64_t tokens, int64_t heads,
                                      int64_t kv_heads, int64_t head_dim, const int32_t* positions,
                                      const float* inv_freq, float linear_factor, float* q,
                                      float* k, float* v) {
  const int64_t half = head_dim / 2, slots = heads + 2 * kv_heads;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * slots * half) return;
  const int64_t t = i / (slots * half), slot = (i / half) % slots, j = i % half;
  const float* from = qkv + (t * slots + slot) * head_dim;
  float* to = slot < heads              ? q + (t * heads + slot) * head_dim
              : slot < heads + kv_heads ? k + (t * kv_heads + slot - heads) * head_dim
                                        : v + (t * kv_heads + slot - heads - kv_heads) * head_dim;
  to[j] = from[j];
  to[j + half] = from[j + half];
  if (slot < heads + kv_heads)
    rotate(to, j, half, (float(positions[t]) / linear_factor) * inv_freq[j]);
}

}  // namespace

void embedding(const bf16_bits* table, int64_t rows, int64_t cols, int64_t first_row,
               const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n * cols == 0) return;
  embedding_kernel<<<blocks_for(n * cols, kThreads), kThreads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(table), rows, cols, first_row, ids, n, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void rms_norm(const float* x, int64_t rows, int64_t dim, const float* gamma, float eps, float* out,
              cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<<<unsigned(rows), kThreads, 0, stream>>>(x, dim, gamma, eps, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq, float linear_factor, cudaStream_t stream) {
  const int64_t n = tokens * heads * (head_dim / 2);
  if (n == 0) return;
  rope_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, tokens, heads, head_dim,
                                                                positions, inv_freq, linear_factor);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void split_qkv_rope(const float* qkv, int64_t tokens, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, const int32_t* positions, const float* inv_freq,
                    float linear_factor, float* q, float* k, float* v, cudaStream_t stream) {
  const int64_t n = tokens * (heads + 2 * kv_heads) * (head_dim / 2);
  if (n == 0) return;
  split_qkv_rope_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      qkv, tokens, heads, kv_heads, head_dim, positions, inv_freq, linear_factor, q, k, v);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace dsmath::cuda
