// Elementwise ops on f32 activations, one thread per element:
//   to_bf16:   y[i] = bf16_round_nearest_even(x[i])      (what the tensor-core GEMMs read)
//   add:       x[i] += y[i]                               (the residual)
//   silu_mul:  out[i] = gate[i] / (1 + e^-gate[i]) * up[i]
//   silu_mul_halves: the same with gate[r, c] = gu[r, c] and up[r, c] = gu[r, cols + c]
//              (the output of the stacked gate/up GEMM, gu = [rows, 2 * cols])
//   tree_sum:  out = ((b0 + b1) + (b2 + b3)) + ...        (blocks b of x, pairwise, in order)
//   gather_rows: out[i, :] = x[rows[i], :]
// expf is the full-precision one (no fast math), as the CPU's std::exp.
#include <cuda_bf16.h>

#include "kernels/cuda/elementwise.h"

namespace dsmath::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void to_bf16_kernel(const float* x, int64_t n, __nv_bfloat16* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void silu_mul_halves_kernel(const float* gate_up, int64_t rows, int64_t cols,
                                       float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const float g = gate_up[r * 2 * cols + c];
  out[i] = g / (1.0f + expf(-g)) * gate_up[r * 2 * cols + cols + c];
}

// One level of the tree: a[i] += a[i + stride * block] for each pair at this level.
__global__ void tree_level_kernel(float* x, int64_t parts, int64_t block, int64_t stride) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t pairs = (parts + 2 * stride - 1) / (2 * stride);
  if (i >= pairs * block) return;
  const int64_t left = (i / block) * 2 * stride, j = i % block;
  if (left + stride < parts) x[left * block + j] += x[(left + stride) * block + j];
}

__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int64_t n, int64_t cols,
                                   float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n * cols) out[i] = x[int64_t(rows[i / cols]) * cols + i % cols];
}

}  // namespace

void to_bf16(const float* x, int64_t n, bf16_bits* y, cudaStream_t stream) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      x, n, reinterpret_cast<__nv_bfloat16*>(y));
  DSMATH_CUDA_CHECK_LAUNCH();
}

void add(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  add_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream) {
  if (n == 0) return;
  silu_mul_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(gate, up, n, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void silu_mul_halves(const float* gate_up, int64_t rows, int64_t cols, float* out,
                     cudaStream_t stream) {
  if (rows * cols == 0) return;
  silu_mul_halves_kernel<<<blocks_for(rows * cols, kThreads), kThreads, 0, stream>>>(gate_up, rows,
                                                                                     cols, out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

void tree_sum(float* x, int64_t parts, int64_t block, float* out, cudaStream_t stream) {
  for (int64_t stride = 1; stride < parts; stride *= 2) {
    const int64_t pairs = (parts + 2 * stride - 1) / (2 * stride);
    tree_level_kernel<<<blocks_for(pairs * block, kThreads), kThreads, 0, stream>>>(x, parts, block,
                                                                                    stride);
    DSMATH_CUDA_CHECK_LAUNCH();
  }
  if (block > 0 && out != x)
    DSMATH_CUDA_CHECK(
        cudaMemcpyAsync(out, x, size_t(block) * sizeof(float), cudaMemcpyDeviceToDevice, stream));
}

void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t cols, float* out,
                 cudaStream_t stream) {
  if (n * cols == 0) return;
  gather_rows_kernel<<<blocks_for(n * cols, kThreads), kThreads, 0, stream>>>(x, rows, n, cols,
                                                                              out);
  DSMATH_CUDA_CHECK_LAUNCH();
}

}  // namespace dsmath::cuda
