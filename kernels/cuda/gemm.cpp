#include "kernels/cuda/gemm.h"

#include <limits>

#include "common/core/error.h"

#define DSMATH_CUBLAS_CHECK(call)                                                      \
  do {                                                                                 \
    const cublasStatus_t dsmath_cublas_rc_ = (call);                                   \
    if (dsmath_cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                    \
      ::dsmath::detail::checked_call_failed(#call, __FILE__, __LINE__,                 \
                                            cublasGetStatusString(dsmath_cublas_rc_)); \
  } while (0)

namespace dsmath::cuda {
namespace {

int as_int(int64_t v, const char* what) {
  DSMATH_CHECK(v >= 0 && v <= std::numeric_limits<int>::max(), "gemm: ", what, " = ", v,
               " does not fit cuBLAS's int");
  return int(v);
}

}  // namespace

Gemm::Gemm(cudaStream_t stream) {
  DSMATH_CUBLAS_CHECK(cublasCreate(&handle_));
  DSMATH_CUBLAS_CHECK(cublasSetStream(handle_, stream));
  // Tensor cores for bf16 inputs; never a reduced-precision f32 path.
  DSMATH_CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  // A workspace of our own: cuBLAS must not allocate while a CUDA graph is being captured.
  constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  DSMATH_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  DSMATH_CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes));
}

Gemm::~Gemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
  if (workspace_ != nullptr) cudaFree(workspace_);
}

void Gemm::linear(const bf16_bits* x, int64_t m, int64_t k, const bf16_bits* w, int64_t n,
                  float* y) {
  if (m == 0 || n == 0) return;
  const float alpha = 1.0f, beta = 0.0f;
  DSMATH_CUBLAS_CHECK(cublasGemmEx(
      handle_, CUBLAS_OP_T, CUBLAS_OP_N, as_int(n, "n"), as_int(m, "m"), as_int(k, "k"), &alpha, w,
      CUDA_R_16BF, as_int(k, "k"), x, CUDA_R_16BF, as_int(k, "k"), &beta, y, CUDA_R_32F,
      as_int(n, "n"), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void Gemm::linear_chunks(const bf16_bits* x, int64_t m, int64_t k, const bf16_bits* w, int64_t n,
                         int64_t chunks, float* partials) {
  DSMATH_CHECK(chunks >= 1 && k % chunks == 0, "gemm: K = ", k, " does not split into ", chunks,
               " chunks");
  if (m == 0 || n == 0) return;
  const int64_t kc = k / chunks;
  const float alpha = 1.0f, beta = 0.0f;
  // Chunk c reads columns [c*kc, (c+1)*kc) of W and of x: a stride of kc elements in both.
  DSMATH_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      handle_, CUBLAS_OP_T, CUBLAS_OP_N, as_int(n, "n"), as_int(m, "m"), as_int(kc, "k/chunks"),
      &alpha, w, CUDA_R_16BF, as_int(k, "k"), kc, x, CUDA_R_16BF, as_int(k, "k"), kc, &beta,
      partials, CUDA_R_32F, as_int(n, "n"), m * n, as_int(chunks, "chunks"), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
}

}  // namespace dsmath::cuda
