// The engine on a tensor-parallel group (mpirun -np 1, 2 and 4): random request streams with
// chunking, preemption, prefix-cache eviction and cancellations give every sample the tokens
// it gets alone, at every tp; and an idle group's followers wait without burning CPU.
#include <gtest/gtest.h>
#include <time.h>

#include <chrono>
#include <thread>

#include "tests/mpi/model_fixture.h"
#include "tests/support/engine_scenarios.h"

namespace dsmath {
namespace {

using testing::is_rank0;
using testing::Replica;

TEST(EngineTp, RandomStreamEqualsSoloRuns) {
  const auto dir =
      testing::make_model("engine-stream", {"--preset", "tiny", "--kv-heads", "2", "--seed", "5"});
  {
    Replica r(dir, MPI_COMM_WORLD, /*kv_blocks=*/12);
    ModelRunner runner(r.model, *r.comm);
    if (!runner.is_driver()) {
      runner.follow();
    } else {
      EngineConfig config;
      config.max_step_tokens = 24;
      config.max_running = 6;
      testing::StreamOutcome outcome;
      {
        Engine engine(runner, config);
        outcome = testing::run_random_stream(engine, 11, 300, /*max_prompt=*/60);
      }
      EXPECT_GT(outcome.stats.preemptions, 0);
      EXPECT_GT(outcome.stats.prefix_cache_hit_tokens, 0);
      EXPECT_EQ(outcome.stats.kv_blocks_used, 0);
      testing::expect_samples_equal_alone(runner, outcome);
      runner.shutdown();
    }
  }
  testing::remove_on_rank0(dir);
}

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

// Followers of an idle group sleep in await_broadcast: over 2 s of idleness their CPU time
// stays under 0.1 s in total, and the group answers the next step at once.
TEST(EngineTp, IdleFollowersDoNotSpin) {
  if (testing::world_size() < 2) GTEST_SKIP() << "no followers at tp 1";
  const auto dir = testing::make_model("engine-idle", {"--preset", "tiny", "--seed", "2"});
  {
    Replica r(dir, MPI_COMM_WORLD);
    StepPlan plan;
    plan.sequences.push_back({{100000, 5, 6}, 0, {0}});
    double step_ms = 0;
    {
      ModelRunner warm(r.model, *r.comm);  // pages mapped, threads started
      if (warm.is_driver()) {
        warm.step(plan);
        warm.shutdown();
      } else {
        warm.follow();
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double cpu = 0;
    ModelRunner runner(r.model, *r.comm);
    if (!runner.is_driver()) {
      const double before = process_cpu_seconds();
      runner.follow();  // 2 s of nothing, then one step
      cpu = process_cpu_seconds() - before;
    } else {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      const auto woke = std::chrono::steady_clock::now();
      runner.step(plan);
      step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - woke)
                    .count();
      runner.shutdown();
    }
    std::vector<double> all(size_t(testing::world_size()));
    MPI_Gather(&cpu, 1, MPI_DOUBLE, all.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (is_rank0()) {
      double total = 0;
      for (double c : all) total += c;
      std::printf("followers' CPU time over 2 s idle and one step: %.3f s; that step: %.2f ms\n",
                  total, step_ms);
      EXPECT_LT(total, 0.1);
    }
  }
  testing::remove_on_rank0(dir);
}

}  // namespace
}  // namespace dsmath
