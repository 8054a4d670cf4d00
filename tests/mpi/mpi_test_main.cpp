// main() for gtest executables run under mpirun (dsmath_add_mpi_gtest). Every rank runs every
// test; only rank 0 prints gtest's usual output, other ranks print just their own failures.
// After each test the ranks agree on who failed it, so a failure on rank 2 is named in rank 0's
// log and makes every rank exit non-zero. A watchdog ends the job when one test runs too long
// (typically: a rank failed an ASSERT and skipped a collective the others wait in).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "worker/comm/mpi_session.h"

namespace {

using testing::TestInfo;
using testing::TestPartResult;

// Non-zero ranks have no default printer; this prints what failed there, tagged with the rank.
class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const TestPartResult& result) override {
    if (!result.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n%s\n", rank_,
                result.file_name() ? result.file_name() : "?", result.line_number(),
                result.message());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

// Gathers each test's outcome to rank 0, which names the ranks where it failed.
class RankAgreement : public testing::EmptyTestEventListener {
 public:
  RankAgreement(int rank, int size, MPI_Comm comm) : rank_(rank), size_(size), comm_(comm) {}

  void OnTestEnd(const TestInfo& info) override {
    int failed = info.result()->Failed() ? 1 : 0;
    std::vector<int> all(size_);
    MPI_Gather(&failed, 1, MPI_INT, all.data(), 1, MPI_INT, 0, comm_);
    if (rank_ != 0) return;
    std::string ranks;
    for (int r = 0; r < size_; ++r)
      if (all[r] != 0) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
    if (ranks.empty()) return;
    const std::string name = std::string(info.test_suite_name()) + "." + info.name();
    std::printf("[  FAILED  ] %s failed on rank(s) %s of %d\n", name.c_str(), ranks.c_str(), size_);
    std::fflush(stdout);
    failures_.push_back(name + " (rank " + ranks + ")");
  }

  void OnTestProgramEnd(const testing::UnitTest&) override {
    if (rank_ != 0 || failures_.empty()) return;
    std::printf("[  FAILED  ] %zu test(s) failed on some rank:\n", failures_.size());
    for (const auto& f : failures_) std::printf("[  FAILED  ]   %s\n", f.c_str());
    std::fflush(stdout);
  }

 private:
  int rank_, size_;
  MPI_Comm comm_;
  std::vector<std::string> failures_;
};

// Ends the process (and with it, through mpirun, the job) when one test outlives the limit.
// It never calls MPI: only the main thread may (MPI_THREAD_FUNNELED).
class Watchdog : public testing::EmptyTestEventListener {
 public:
  Watchdog(int rank, int seconds) : rank_(rank), seconds_(seconds), thread_([this] { run(); }) {}
  ~Watchdog() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  void OnTestStart(const TestInfo& info) override {
    std::lock_guard lock(mutex_);
    test_ = std::string(info.test_suite_name()) + "." + info.name();
    deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(seconds_);
    armed_ = true;
    wake_.notify_all();
  }
  void OnTestEnd(const TestInfo&) override {
    std::lock_guard lock(mutex_);
    armed_ = false;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      if (!armed_) {
        wake_.wait(lock);
        continue;
      }
      const auto deadline = deadline_;
      if (wake_.wait_until(lock, deadline) == std::cv_status::timeout && armed_ && !stop_ &&
          deadline_ == deadline) {
        std::fprintf(stderr,
                     "[rank %d] %s still running after %d s; a rank probably failed and skipped a "
                     "collective. Ending the job (DSMATH_MPI_TEST_TIMEOUT_S sets the limit).\n",
                     rank_, test_.c_str(), seconds_);
        std::fflush(stderr);
        std::_Exit(3);
      }
    }
  }

  int rank_, seconds_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false, armed_ = false;
  std::string test_;
  std::chrono::steady_clock::time_point deadline_;
  std::thread thread_;
};

int timeout_seconds() {
  const char* env = std::getenv("DSMATH_MPI_TEST_TIMEOUT_S");
  const int seconds = env != nullptr ? std::atoi(env) : 0;
  return seconds > 0 ? seconds : 120;
}

}  // namespace

int main(int argc, char** argv) {
  dsmath::MpiSession mpi(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);
  const int rank = mpi.topology().rank, size = mpi.topology().world_size;
  // As dsmath-worker does: the ranks on a node share its cores instead of each starting a
  // thread per core (oversubscribed OpenMP threads spin against each other).
  dsmath::MpiSession::set_threads_per_rank();

  // The harness's own messages go on a communicator of their own, so they can never be matched
  // with a collective that a test left half-done.
  MPI_Comm results = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &results);

  auto& listeners = testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    delete listeners.Release(listeners.default_xml_generator());  // one report file, rank 0's
    listeners.Append(new RankFailurePrinter(rank));
  }
  listeners.Append(new Watchdog(rank, timeout_seconds()));
  listeners.Append(new RankAgreement(rank, size, results));

  const int local = RUN_ALL_TESTS();
  int worst = local;
  MPI_Allreduce(&local, &worst, 1, MPI_INT, MPI_MAX, results);
  MPI_Comm_free(&results);
  return worst;
}
