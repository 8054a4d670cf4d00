// What every kernel file of kernels/cuda shares: the launch check and the bf16 element type
// the host sees (raw 16-bit words; device code reinterprets them as __nv_bfloat16).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "worker/comm/cuda_check.h"

namespace dsmath::cuda {

using bf16_bits = uint16_t;

// Blocks of `threads` covering n elements (at least one block).
inline unsigned blocks_for(int64_t n, int threads) {
  return unsigned(n <= 0 ? 1 : (n + threads - 1) / threads);
}

}  // namespace dsmath::cuda

// After a kernel launch: a bad configuration shows up here, not at some later synchronize.
#define DSMATH_CUDA_CHECK_LAUNCH() DSMATH_CUDA_CHECK(cudaGetLastError())
