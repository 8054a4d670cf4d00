// Checked calls into MPI, CUDA and NCCL: one macro family whose error names the call as written,
// the file and line, and the library's own explanation, so a failure on rank 3 of a cluster job
// can be traced from a single log line. DSMATH_MPI_CHECK lives here; DSMATH_CUDA_CHECK and
// DSMATH_NCCL_CHECK live in cuda_check.h so MPI-only code never needs CUDA headers.
#pragma once

#include <string>

#include "common/core/error.h"

namespace dsmath {
namespace detail {

// "MPI_Bcast(buf, n, MPI_BYTE, root, comm) failed at worker/comm/x.cpp:42: MPI_ERR_ROOT: ..."
[[noreturn]] inline void checked_call_failed(const char* call, const char* file, int line,
                                             const std::string& why) {
  fail(call, " failed at ", file, ":", line, ": ", why);
}

}  // namespace detail

// The MPI library's text for an error code (MPI_Error_string), with the code itself.
std::string mpi_error_string(int code);

}  // namespace dsmath

// MPI only returns error codes on communicators whose error handler is MPI_ERRORS_RETURN (the
// communicators made here set it); on others the default handler aborts the job first.
#define DSMATH_MPI_CHECK(call)                                                           \
  do {                                                                                   \
    const int dsmath_mpi_rc_ = (call);                                                   \
    if (dsmath_mpi_rc_ != MPI_SUCCESS)                                                   \
      ::dsmath::detail::checked_call_failed(#call, __FILE__, __LINE__,                   \
                                            ::dsmath::mpi_error_string(dsmath_mpi_rc_)); \
  } while (0)
