#include "worker/comm/mpi_session.h"

#include <cstdio>
#include <cstdlib>

#include "worker/comm/checked_call.h"

namespace dsmath {

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    // Before MPI_Init the default error handler is fatal, so a failure here ends the process
    // with MPI's own message; the check matters only for implementations that return.
    DSMATH_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      owns_mpi_ = false;
      fail("MPI provides thread level ", provided, ", dsmath needs MPI_THREAD_FUNNELED");
    }
  }
  topology_ = Topology::from_mpi(MPI_COMM_WORLD);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

void MpiSession::abort(int exit_code, const std::string& message) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "rank %d: %s\n", rank, message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort should not return; never let a caller continue if it does
}

}  // namespace dsmath
