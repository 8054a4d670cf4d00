#include "worker/comm/topology.h"

#include "worker/comm/checked_call.h"

namespace dsmath {

Topology Topology::from_mpi(MPI_Comm comm) {
  int size = 0, rank = 0;
  DSMATH_MPI_CHECK(MPI_Comm_size(comm, &size));
  DSMATH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  return tensor_parallel(size, rank);
}

Topology Topology::pipeline(int world_size, int rank, int pp) {
  Topology t = tensor_parallel(world_size, rank);
  DSMATH_CHECK(pp >= 1 && world_size % pp == 0, "--pp ", pp, " does not divide the ", world_size,
               " ranks of this job: mpirun -np must be tp x pp");
  t.pp_size = pp;
  t.tp_size = world_size / pp;
  t.stage = rank / t.tp_size;
  t.tp_rank = rank % t.tp_size;
  return t;
}

}  // namespace dsmath
