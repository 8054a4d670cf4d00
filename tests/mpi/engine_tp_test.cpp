// The engine on a tensor-parallel group (mpirun -np 1, 2 and 4): random request streams of
// 1,000 operations with chunking, preemption, prefix-cache eviction and cancellations give
// every sample the tokens it gets alone, at every tp, with and without overlap, and leak no
// block; an idle group's followers wait without burning CPU.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
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
    testing::random_stream_on_group(runner, 11, 1000, /*max_prompt=*/60);
  }
  testing::remove_on_rank0(dir);
}

// The engine running each step ahead of the last (overlap): the driver fills the placeholders
// before the plan goes out, so every rank computes the same tokens.
TEST(EngineTp, RandomStreamWithOverlapEqualsSoloRuns) {
  const auto dir =
      testing::make_model("engine-overlap", {"--preset", "tiny", "--kv-heads", "2", "--seed", "6"});
  {
    Replica r(dir, MPI_COMM_WORLD, /*kv_blocks=*/12);
    ModelRunner runner(r.model, *r.comm);
    testing::random_stream_on_group(runner, 12, 400, /*max_prompt=*/60, /*micro_batches=*/1,
                                    /*overlap=*/true);
  }
  testing::remove_on_rank0(dir);
}

// CPU time (user + system) of process `pid` so far, from /proc/<pid>/stat (same node).
double cpu_seconds_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
  std::string f;
  double ticks = 0;
  for (int i = 3; fields >> f && i <= 15; ++i)
    if (i == 14 || i == 15) ticks += std::stod(f);  // utime, stime
  return ticks / double(sysconf(_SC_CLK_TCK));
}

// Followers of an idle group (told by notify_idle) sleep in await_broadcast: over 2 s of
// idleness their CPU time stays under 0.1 s in total, and the group answers the next step.
TEST(EngineTp, IdleFollowersDoNotSpin) {
  if (testing::world_size() < 2) GTEST_SKIP() << "no followers at tp 1";
  const auto dir = testing::make_model("engine-idle", {"--preset", "tiny", "--seed", "2"});
  {
    Replica r(dir, MPI_COMM_WORLD);
    int pid = ::getpid();
    std::vector<int> pids(size_t(testing::world_size()));
    MPI_Gather(&pid, 1, MPI_INT, pids.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    ModelRunner runner(r.model, *r.comm);
    if (!runner.is_driver()) {
      runner.follow();
    } else {
      StepPlan plan;
      plan.sequences.push_back({{100000, 5, 6}, 0, {0}});
      runner.step(plan);     // pages mapped, threads started
      runner.notify_idle();  // as Engine::wait_for_work does when it has nothing to do
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto followers_cpu = [&] {
        double total = 0;
        for (size_t i = 1; i < pids.size(); ++i) total += cpu_seconds_of(pids[i]);
        return total;
      };
      const double before = followers_cpu();
      std::this_thread::sleep_for(std::chrono::seconds(2));
      const double idle_cpu = followers_cpu() - before;
      const auto woke = std::chrono::steady_clock::now();
      runner.step(plan);
      const double step_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - woke)
              .count();
      runner.shutdown();
      std::printf("followers' CPU time over 2 s idle: %.3f s; the next step: %.2f ms\n", idle_cpu,
                  step_ms);
      EXPECT_LT(idle_cpu, 0.1);
    }
  }
  testing::remove_on_rank0(dir);
}

}  // namespace
}  // namespace dsmath
