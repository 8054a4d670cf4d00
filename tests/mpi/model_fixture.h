// A tensor-parallel replica of a seeded checkpoint over all ranks of MPI_COMM_WORLD, for the
// multi-rank model tests. Rank 0 writes the checkpoint with dsmath-make-model; every rank then
// maps it and binds its own shard.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/comm/communicator.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/model_runner.h"
#include "worker/model/cpu_backend.h"
#include "worker/model/llama.h"

namespace dsmath::testing {

// Same path on every rank: the job id is rank 0's pid, broadcast.
inline std::filesystem::path shared_temp_dir(const std::string& name) {
  int pid = ::getpid();
  MPI_Bcast(&pid, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return std::filesystem::temp_directory_path() /
         ("dsmath-mpi-" + name + "-" + std::to_string(pid));
}

// Rank 0 runs dsmath-make-model ARGS --out DIR; all ranks wait for it.
inline std::filesystem::path make_model(const std::string& name,
                                        const std::vector<std::string>& args) {
  const auto dir = shared_temp_dir(name);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  int ok = 1;
  if (rank == 0) {
    std::filesystem::remove_all(dir);
    std::string cmd = std::string(DSMATH_BIN_DIR) + "/dsmath-make-model";
    for (const std::string& a : args) cmd += " '" + a + "'";
    cmd += " --out '" + dir.string() + "' > /dev/null";
    ok = std::system(cmd.c_str()) == 0;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!ok) ADD_FAILURE() << "dsmath-make-model failed for " << name;
  return dir;
}

inline void remove_on_rank0(const std::filesystem::path& dir) {
  MPI_Barrier(MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::filesystem::remove_all(dir);
}

// Logits of every position of `tokens` as one fresh sequence (all ranks must call it).
inline std::vector<float> all_logits(LlamaModel& model, const std::vector<int32_t>& tokens) {
  BlockManager blocks(model.kv_blocks(), model.block_size());
  BlockTable table;
  blocks.append(table, int32_t(tokens.size()));
  StepPlan plan;
  plan.all_logits = true;
  plan.sequences.push_back({tokens, 0, table.blocks});
  return model.forward(plan);
}

// A model replica over the ranks of `mpi_comm` (MPI_COMM_WORLD: tp = world size;
// MPI_COMM_SELF: tp 1 on this rank alone).
struct Replica {
  Replica(const std::filesystem::path& dir, MPI_Comm mpi_comm, int32_t kv_blocks = 256,
          DType kv_dtype = DType::F32)
      : comm(make_mpi_communicator(mpi_comm)),
        checkpoint(Checkpoint::open(dir)),
        backend(kv_dtype),
        model(checkpoint, backend, *comm, kv_blocks) {}

  std::vector<float> all_logits(const std::vector<int32_t>& tokens) {
    return testing::all_logits(model, tokens);
  }

  std::unique_ptr<Communicator> comm;
  Checkpoint checkpoint;
  CpuBackend backend;
  LlamaModel model;
};

inline bool is_rank0() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank == 0;
}

inline int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

}  // namespace dsmath::testing
