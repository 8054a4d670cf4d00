// Elementwise kernels over f32 activations (see elementwise.cu for the math). All launch on
// `stream` and return at once.
#pragma once

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

void to_bf16(const float* x, int64_t n, bf16_bits* y, cudaStream_t stream);
void add(float* x, const float* y, int64_t n, cudaStream_t stream);
void silu_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t stream);
// The same over rows of [gate | up] (gate_up is [rows, 2 * cols]); out is [rows, cols].
void silu_mul_halves(const float* gate_up, int64_t rows, int64_t cols, float* out,
                     cudaStream_t stream);
// x holds `parts` blocks of `block` floats; out = their pairwise-tree sum in block order.
// x is overwritten.
void tree_sum(float* x, int64_t parts, int64_t block, float* out, cudaStream_t stream);
// out[i] = x[rows[i]] for rows of `cols` floats; rows is a device array of n entries.
void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t cols, float* out,
                 cudaStream_t stream);

}  // namespace dsmath::cuda
