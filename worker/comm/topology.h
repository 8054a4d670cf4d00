// Topology: the parallel layout of one worker group, computed once from MPI and passed by value.
// One mpirun job is one model replica, tensor-parallel over all its ranks, so today
// tp_size == world_size and tp_rank == rank. The separate fields let data-parallel groups inside
// one job be added later without touching the code that shards weights by tp_rank.
#pragma once

#include <mpi.h>

#include <string>

#include "common/core/error.h"

namespace dsmath {

struct Topology {
  int world_size = 1;
  int rank = 0;
  int tp_size = 1;
  int tp_rank = 0;

  // Rank 0 plans each step, samples and talks to the coordinator.
  bool is_driver() const { return rank == 0; }

  // The layout of `world_size` ranks all in one tensor-parallel group.
  static Topology tensor_parallel(int world_size, int rank) {
    DSMATH_CHECK(world_size >= 1, "topology: world size must be at least 1, got ", world_size);
    DSMATH_CHECK(rank >= 0 && rank < world_size, "topology: rank ", rank, " is outside a world of ",
                 world_size, " ranks");
    return Topology{world_size, rank, world_size, rank};
  }

  // The layout of the ranks of `comm` (MPI must be initialized).
  static Topology from_mpi(MPI_Comm comm = MPI_COMM_WORLD);

  // "rank 1/4 (tp 1/4)", for log lines and error messages.
  std::string describe() const {
    return cat("rank ", rank, "/", world_size, " (tp ", tp_rank, "/", tp_size, ")");
  }

  bool operator==(const Topology&) const = default;
};

}  // namespace dsmath
