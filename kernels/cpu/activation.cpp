// silu_mul: out = silu(gate) * up with silu(x) = x / (1 + e^-x); add: x += y (see
// activation.h). Both are memory-light next to the matmuls around them, so the optimized
// versions only parallelize large inputs; the arithmetic equals the reference exactly.
#include "kernels/cpu/activation.h"

#include <cmath>

namespace dsmath::cpu {

namespace {
// Below this many elements a parallel region costs more than the loop.
constexpr int64_t kParallelMin = 1 << 15;

inline float silu(float g) {
  return g / (1.0f + std::exp(-g));
}
}  // namespace

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

void silu_mul_reference(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void add(float* x, const float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace dsmath::cpu
