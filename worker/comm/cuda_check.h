// DSMATH_CUDA_CHECK and (when NCCL is built) DSMATH_NCCL_CHECK: the CUDA and NCCL members of the
// checked-call family in checked_call.h. Both throw dsmath::Error naming call, file and line.
#pragma once

#include <cuda_runtime_api.h>

#include "worker/comm/checked_call.h"

#if DSMATH_HAVE_NCCL
#include <nccl.h>
#endif

#define DSMATH_CUDA_CHECK(call)                                                                    \
  do {                                                                                             \
    const cudaError_t dsmath_cuda_rc_ = (call);                                                    \
    if (dsmath_cuda_rc_ != cudaSuccess)                                                            \
      ::dsmath::detail::checked_call_failed(#call, __FILE__, __LINE__,                             \
                                            ::dsmath::cat(cudaGetErrorName(dsmath_cuda_rc_), ": ", \
                                                          cudaGetErrorString(dsmath_cuda_rc_)));   \
  } while (0)

#if DSMATH_HAVE_NCCL
// ncclGetLastError carries the detail (which peer, which socket) that the result code lacks.
// ncclInProgress is how a non-blocking communicator says "started", not a failure.
#define DSMATH_NCCL_CHECK(call)                                                           \
  do {                                                                                    \
    const ncclResult_t dsmath_nccl_rc_ = (call);                                          \
    if (dsmath_nccl_rc_ != ncclSuccess && dsmath_nccl_rc_ != ncclInProgress)              \
      ::dsmath::detail::checked_call_failed(                                              \
          #call, __FILE__, __LINE__,                                                      \
          ::dsmath::detail::nccl_error_text(dsmath_nccl_rc_, ncclGetLastError(nullptr))); \
  } while (0)

namespace dsmath::detail {
inline std::string nccl_error_text(ncclResult_t rc, const char* last) {
  std::string text = ncclGetErrorString(rc);
  if (last != nullptr && *last != '\0') text += cat(" (", last, ")");
  return text;
}
}  // namespace dsmath::detail
#endif
