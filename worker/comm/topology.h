// Topology: the parallel layout of one worker group, computed once and passed by value. One
// mpirun job is one model replica of tp x pp ranks: pp pipeline stages (consecutive layers
// each), each stage tp ranks that shard its layers (Megatron). The ranks of a stage are
// contiguous (rank = stage * tp + tp_rank), so `mpirun --map-by ppr:TP:node` keeps a stage's
// all-reduces inside a node and only the stage-to-stage activations cross nodes.
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
  int pp_size = 1;
  int stage = 0;  // pipeline stage, 0 .. pp_size - 1

  // Rank 0 plans each step, samples and talks to the coordinator.
  bool is_driver() const { return rank == 0; }

  // The layout of `world_size` ranks all in one tensor-parallel group.
  static Topology tensor_parallel(int world_size, int rank) {
    DSMATH_CHECK(world_size >= 1, "topology: world size must be at least 1, got ", world_size);
    DSMATH_CHECK(rank >= 0 && rank < world_size, "topology: rank ", rank, " is outside a world of ",
                 world_size, " ranks");
    return Topology{world_size, rank, world_size, rank, 1, 0};
  }

  // `world_size` ranks as `pp` stages of world_size / pp tensor-parallel ranks each. Throws
  // naming --pp when pp does not divide the world size.
  static Topology pipeline(int world_size, int rank, int pp);

  bool first_stage() const { return stage == 0; }
  bool last_stage() const { return stage == pp_size - 1; }
  // World ranks: the same tp rank in a neighbouring stage, and a stage's tp rank 0.
  int rank_in_stage(int s, int tp) const { return s * tp_size + tp; }

  // The layout of the ranks of `comm` (MPI must be initialized).
  static Topology from_mpi(MPI_Comm comm = MPI_COMM_WORLD);

  // "rank 1/4 (tp 1/4)" or "rank 3/4 (stage 1/2, tp 1/2)", for log lines and error messages.
  std::string describe() const {
    if (pp_size == 1)
      return cat("rank ", rank, "/", world_size, " (tp ", tp_rank, "/", tp_size, ")");
    return cat("rank ", rank, "/", world_size, " (stage ", stage, "/", pp_size, ", tp ", tp_rank,
               "/", tp_size, ")");
  }

  bool operator==(const Topology&) const = default;
};

}  // namespace dsmath
