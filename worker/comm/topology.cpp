#include "worker/comm/topology.h"

#include "worker/comm/checked_call.h"

namespace dsmath {

Topology Topology::from_mpi(MPI_Comm comm) {
  int size = 0, rank = 0;
  DSMATH_MPI_CHECK(MPI_Comm_size(comm, &size));
  DSMATH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return tensor_parallel(size, rank);
}

}  // namespace dsmath
