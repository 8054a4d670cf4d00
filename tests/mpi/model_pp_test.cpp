// Pipeline parallelism on the ranks of this job (mpirun -np 1, 2 and 4): every pp that divides
// the world (tp = world / pp) gives logits bitwise equal to one process running the whole model,
// with even and uneven layer splits; the engine's random request streams (chunked prefill,
// preemption, prefix cache, cancellation) give every sample the tokens it gets alone; and a
// stage that cannot load its shard stops every rank with the message.
#include <gtest/gtest.h>

#include <cstring>

#include "tests/mpi/model_fixture.h"
#include "tests/support/engine_scenarios.h"
#include "worker/comm/checked_call.h"
#include "worker/comm/collective_error.h"
#include "worker/model/pipeline_stage.h"

namespace dsmath {
namespace {

using testing::is_rank0;
using testing::world_size;

// A tp x pp replica over MPI_COMM_WORLD: the stage's tp ranks share a communicator of their own.
struct PipelineReplica {
  PipelineReplica(const std::filesystem::path& dir, int pp, std::vector<int64_t> split = {},
                  int32_t kv_blocks = 256)
      : world(make_mpi_communicator(MPI_COMM_WORLD)),
        topology(Topology::pipeline(world->topology().world_size, world->topology().rank, pp)),
        stage_comm(split_by_stage(topology)),
        checkpoint(Checkpoint::open(dir)),
        model(checkpoint, backend, *stage_comm, kv_blocks, 16,
              PipelineStage::make(checkpoint.config(), topology, split, world.get())) {}

  static std::unique_ptr<Communicator> split_by_stage(const Topology& t) {
    MPI_Comm stage = MPI_COMM_NULL;
    DSMATH_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, t.stage, t.rank, &stage));
    auto comm = make_mpi_communicator(stage);
    MPI_Comm_free(&stage);
    return comm;
  }

  std::vector<float> all_logits(const std::vector<int32_t>& tokens) {
    return testing::all_logits(model, tokens);
  }

  std::unique_ptr<Communicator> world;
  Topology topology;
  std::unique_ptr<Communicator> stage_comm;
  Checkpoint checkpoint;
  CpuBackend backend;
  LlamaModel model;
};

const std::vector<int32_t> kPrompt{100000, 671, 16315, 294, 1527, 64,  20, 538, 223, 18,
                                   304,    223, 20,    344, 5718, 957, 72, 10,  90,  11};

size_t bitwise_differences(const std::vector<float>& a, const std::vector<float>& b) {
  size_t differ = a.size() == b.size() ? 0 : std::max(a.size(), b.size());
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    differ += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return differ;
}

TEST(Pipeline, LogitsAreBitwiseThoseOfOneProcessAtEveryTpAndPp) {
  const auto dir = testing::make_model(
      "pp-logits", {"--preset", "tiny", "--layers", "4", "--kv-heads", "2", "--seed", "23"});
  std::vector<float> reference;
  if (is_rank0()) {
    testing::Replica single(dir, MPI_COMM_SELF);
    reference = single.all_logits(kPrompt);
  }
  struct Case {
    int pp;
    std::vector<int64_t> split;
  };
  for (const Case& c : {Case{1, {}}, Case{2, {}}, Case{2, {3, 1}}, Case{4, {}}}) {
    if (world_size() % c.pp != 0) continue;
    PipelineReplica r(dir, c.pp, c.split);
    EXPECT_EQ(r.model.layout().tp_size, world_size() / c.pp);
    const std::vector<float> logits = r.all_logits(kPrompt);
    if (is_rank0())
      EXPECT_EQ(bitwise_differences(logits, reference), 0u)
          << "logits of tp " << world_size() / c.pp << " x pp " << c.pp << " (split "
          << (c.split.empty() ? "even" : "3,1") << ") that are not bitwise those of one process";
    else
      EXPECT_TRUE(logits.empty());
  }
  testing::remove_on_rank0(dir);
}

TEST(Pipeline, RandomStreamWithMicroBatchesEqualsSoloRunsUnderPp) {
  if (world_size() % 2 != 0) GTEST_SKIP() << "pp 2 needs an even number of ranks";
  const auto dir = testing::make_model(
      "pp-stream", {"--preset", "tiny", "--layers", "3", "--kv-heads", "2", "--seed", "6"});
  {
    PipelineReplica r(dir, 2, {}, /*kv_blocks=*/12);
    ModelRunner runner(r.model, *r.world);
    // Two micro-batches in flight: stage 0 runs one while stage 1 runs the other.
    testing::random_stream_on_group(runner, 13, 400, /*max_prompt=*/60, /*micro_batches=*/2);
  }
  testing::remove_on_rank0(dir);
}

// At tp 1 x pp = world, the stages' weights partition the model: each rank holds less, and
// together exactly what one process holds.
TEST(Pipeline, StagesHoldOnlyTheirLayers) {
  if (world_size() == 1) GTEST_SKIP() << "one stage holds everything";
  const auto dir =
      testing::make_model("pp-bytes", {"--preset", "tiny", "--layers", "4", "--seed", "3"});
  uint64_t whole = 0;
  {
    testing::Replica single(dir, MPI_COMM_SELF);
    whole = single.model.shard_bytes();
  }
  PipelineReplica r(dir, world_size());
  uint64_t mine = r.model.shard_bytes(), total = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_LT(mine, whole);
  EXPECT_EQ(total, whole);
  testing::remove_on_rank0(dir);
}

TEST(Pipeline, MoreStagesThanLayersStopEveryRankWithTheMessage) {
  const auto dir = testing::make_model("pp-bad", {"--preset", "tiny", "--seed", "4"});
  const Checkpoint checkpoint = Checkpoint::open(dir);
  const Topology t = Topology::pipeline(world_size(), 0, 1);
  try {
    PipelineStage::layer_split(checkpoint.config(), 3);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--pp 3 is outside 1..2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(PipelineStage::layer_split(checkpoint.config(), 2, {2, 1}), Error);
  EXPECT_THROW(Topology::pipeline(4, 0, 3), Error);
  EXPECT_EQ(t.tp_size, world_size());
  testing::remove_on_rank0(dir);
}

}  // namespace
}  // namespace dsmath
