// Internal to the CPU kernels: the AVX512-BF16 path of linear() / linear_chunked() for bf16
// weights (gemm_bf16.cpp). gemm.cpp chooses it; nothing else calls it directly.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/weight_view.h"

namespace dsmath::cpu::detail {

// Whether this CPU runs vdpbf16ps (AVX512_BF16 with AVX512BW, checked once).
bool cpu_has_avx512_bf16();

// y[t, n] = sum_k x[t, k] * W[n, k] for bf16 W, the sum over K taken in `chunks` ranges added
// by the pairwise tree (gemm.h). split: x as two bf16 parts (f32-grade), else one (bf16).
// Requires cpu_has_avx512_bf16() and w.dtype == BF16.
// The weight as the kernel reads it fastest when its columns are summed in `chunks` ranges:
// "dot-pair panels" (gemm_bf16.cpp), 64-byte aligned. Put it in the view's `packed`; the results
// are bitwise those of the row-major rows.
std::shared_ptr<const void> pack_bf16_panels(const WeightView& w, int64_t chunks);

void linear_avx512_bf16(const float* x, int64_t m, const WeightView& w, int64_t chunks, bool split,
                        float* y);

}  // namespace dsmath::cpu::detail
