// MpiSession: RAII for MPI_Init_thread / MPI_Finalize. Construct one at the top of main(); it
// works under mpirun and as a singleton when the program is started directly. MPI calls are
// made from the main thread only (MPI_THREAD_FUNNELED); OpenMP threads never call MPI.
#pragma once

#include <mpi.h>

#include <string>

#include "worker/comm/topology.h"

namespace dsmath {

class MpiSession {
 public:
  // Initializes MPI unless something else already did (then this session leaves finalizing to
  // that owner). Throws dsmath::Error when MPI cannot give MPI_THREAD_FUNNELED.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // The layout of MPI_COMM_WORLD.
  const Topology& topology() const { return topology_; }

  // Ends every rank of the job with `exit_code` after printing `message` to stderr; for errors
  // that other ranks cannot learn about through collectively() (they are stuck in a collective).
  [[noreturn]] static void abort(int exit_code, const std::string& message);

 private:
  bool owns_mpi_ = false;
  Topology topology_;
};

}  // namespace dsmath
