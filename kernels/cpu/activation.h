// Elementwise ops of the LLaMA block.
//   silu_mul: out[i] = silu(gate[i]) * up[i],  silu(x) = x / (1 + e^-x)   (SwiGLU MLP)
//   add:      x[i] += y[i]                                                 (residual)
// out may be gate or up itself (in place): element i is read before it is written.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void silu_mul_reference(const float* gate, const float* up, int64_t n, float* out);
// silu_mul on a given instruction set (tests compare them; one at or below the CPU's tier).
void silu_mul_on(detail::Isa isa, const float* gate, const float* up, int64_t n, float* out);

void add(float* x, const float* y, int64_t n);

}  // namespace dsmath::cpu
