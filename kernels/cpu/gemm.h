// Linear layer:  y[m, n] = sum_k x[m, k] * W[n, k]     x: [M, K] f32, W: [N, K] any dtype
// (HF nn.Linear stores W as [out, in], so this is x @ W^T). Parallel over N with OpenMP;
// the inner dot product is SIMD (AVX2/FMA when the CPU has it, checked at run time).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "kernels/weight_view.h"

namespace dsmath::cpu {

void linear(const float* x, int64_t m, const WeightView& w, float* y);

// The same product with the sum over K in a fixed shape: K falls into `chunks` (1..8) equal
// ranges, each range's dot product is computed exactly as linear() computes a K / chunks wide
// layer, and the ranges' sums are added by a pairwise tree in order: ((c0 + c1) + (c2 + c3))
// + ... A rank holding chunks 4..7 of 8 computes the right subtree of the same tree, so the
// row-parallel layers sum bitwise alike at any tp that divides 8. chunks = 1 is linear().
void linear_chunked(const float* x, int64_t m, const WeightView& w, int64_t chunks, float* y);

// How precisely the AVX512-BF16 path takes the activations, for the whole process (like
// torch.set_float32_matmul_precision): Highest splits each f32 activation into two bf16 parts
// (within the f32 goldens), Medium rounds it to one bf16 (what torch and llama.cpp do in bf16:
// twice the products per instruction, logits off by ~1e-2). Other paths are always f32.
enum class MatmulPrecision { Highest, Medium };
void set_matmul_precision(MatmulPrecision precision);
MatmulPrecision matmul_precision();
const std::map<std::string, MatmulPrecision>& matmul_precisions();  // by --matmul-precision name

// A bf16 weight repacked for the path linear() takes on this CPU, for products summed in
// `chunks` column ranges (linear_chunked; 1 for linear), or nullptr where that path reads the
// row-major rows as they are (all but AVX512-BF16: gemm_bf16.cpp says why it packs). Set it as
// the view's `packed` and keep it alive as long as the view. The products are bitwise the same
// with or without it, only faster; with it, `data` may be dropped (nullptr) when the weight is
// only ever multiplied on this path in that many chunks.
std::shared_ptr<const void> pack_for_linear(const WeightView& w, int64_t chunks = 1);

// Plain triple loop (f64 sums), the reference the tests compare against.
void linear_reference(const float* x, int64_t m, const WeightView& w, float* y);

// The code paths linear() chooses between at run time, best first: AMX-BF16 (tile dot products
// on bf16 weights, x split as below, gemm_amx.cpp), AVX512-BF16 (vdpbf16ps on bf16 weights with x
// split into two bf16 parts, gemm_bf16.cpp; f16/f32 weights take the AVX-512F path on both),
// AVX-512F, AVX2 + FMA + F16C, and portable C++ for any other CPU. Each gives batch-invariant
// results (a token's output does not depend on the other rows of x) but they round differently
// from each other. linear_path_supported() says whether this CPU can run one; linear_on_path()
// runs a given one (tests cover every path the machine supports, benchmarks compare them).
enum class LinearPath { Portable, Avx2, Avx512, Avx512Bf16, Amx };
LinearPath linear_best_path();
const char* linear_path_name(LinearPath path);  // "amx-bf16", "avx512-bf16", ... "portable"
bool linear_path_supported(LinearPath path);
void linear_on_path(LinearPath path, const float* x, int64_t m, const WeightView& w, float* y);
void linear_chunked_on_path(LinearPath path, const float* x, int64_t m, const WeightView& w,
                            int64_t chunks, float* y);

}  // namespace dsmath::cpu
