// Internal to the CPU kernels: the AMX-BF16 path of linear() / linear_chunked() for bf16 weights
// (gemm_amx.cpp). gemm.cpp chooses it; the tests also run its emulation.
#pragma once

#include <cstdint>

#include "kernels/weight_view.h"

namespace dsmath::cpu::detail {

// Whether this CPU and OS run the tile instructions (AMX-TILE and AMX-BF16, tile state enabled,
// the process granted it) and they agree with the emulation on a few shapes. Checked once.
bool cpu_has_amx_bf16();

// y[t, n] = sum_k x[t, k] * W[n, k] for bf16 W, the sum over K taken in `chunks` ranges added by
// the pairwise tree (gemm.h). split: x as two bf16 parts (f32-grade), else one (bf16).
// Requires cpu_has_amx_bf16() and w.dtype == BF16.
void linear_amx(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                float* y);

// The same kernel over a C++ model of the tile instructions, on any x86-64 CPU: what the tests
// check the blocking against, and what the tile path is checked against before it is used.
void linear_amx_emulated(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                         float* y);

}  // namespace dsmath::cpu::detail
