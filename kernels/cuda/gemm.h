// y = x W^T on tensor cores through cuBLAS: bf16 x and W, f32 accumulation and output.
// W is row-major [n, k] (the checkpoint's nn.Linear layout, kept as it is); x row-major [m, k];
// y row-major [m, n]. In cuBLAS's column-major terms that is y^T = W x^T with W read
// transposed (lda = k) and x as it lies (ldb = k).
#pragma once

#include <cublas_v2.h>

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

class Gemm {
 public:
  explicit Gemm(cudaStream_t stream);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void linear(const bf16_bits* x, int64_t m, int64_t k, const bf16_bits* w, int64_t n, float* y);
  // partials[c] = x[:, c*k/chunks ...] W[:, c*k/chunks ...]^T for each of `chunks` equal
  // ranges of K, as one strided batched GEMM: partials is [chunks][m][n].
  void linear_chunks(const bf16_bits* x, int64_t m, int64_t k, const bf16_bits* w, int64_t n,
                     int64_t chunks, float* partials);

 private:
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;  // cuBLAS's scratch, ours so that graph capture never allocates
};

}  // namespace dsmath::cuda
