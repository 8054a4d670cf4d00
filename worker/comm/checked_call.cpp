#include "worker/comm/checked_call.h"

#include <mpi.h>

namespace dsmath {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return cat("MPI error ", code);
  return cat(std::string(text, length), " (MPI error ", code, ")");
}

}  // namespace dsmath
