// Linear layer:  y[m, n] = sum_k x[m, k] * W[n, k]     x: [M, K] f32, W: [N, K] any dtype
// (HF nn.Linear stores W as [out, in], so this is x @ W^T). Parallel over N with OpenMP;
// the inner dot product is SIMD (AVX2/FMA when the CPU has it, checked at run time).
#pragma once

#include <cstdint>

#include "kernels/weight_view.h"

namespace dsmath::cpu {

void linear(const float* x, int64_t m, const WeightView& w, float* y);

// Plain triple loop (f64 sums), the reference the tests compare against.
void linear_reference(const float* x, int64_t m, const WeightView& w, float* y);

// The fallback linear() takes on CPUs without AVX2/FMA/F16C (or with
// DSMATH_KERNELS_PORTABLE=1 set), callable directly so tests cover it on any machine.
void linear_portable(const float* x, int64_t m, const WeightView& w, float* y);

// Whether linear() and the other kernels take their AVX2 paths on this machine.
bool linear_uses_simd();

}  // namespace dsmath::cpu
