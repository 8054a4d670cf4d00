// RMSNorm (LLaMA):  y[r, i] = x[r, i] / sqrt(mean_j x[r, j]^2 + eps) * gamma[i]
// Computed in f32 like HF LlamaRMSNorm (which upcasts to f32 before the variance).
#pragma once

#include <cstdint>

#include "common/core/dtype.h"

namespace dsmath::cpu {

void rms_norm(const float* x, int64_t rows, int64_t dim, const void* gamma, DType gamma_dtype,
              float eps, float* y);

void rms_norm_reference(const float* x, int64_t rows, int64_t dim, const void* gamma,
                        DType gamma_dtype, float eps, float* y);

}  // namespace dsmath::cpu
