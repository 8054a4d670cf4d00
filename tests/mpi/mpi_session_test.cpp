// MpiSession: nesting, and run(), which turns errors into clean exits (agreed errors) or a job
// abort (an error on one rank only). The abort path is in harness_test.cpp, run through
// expect_failure.cmake, since it ends the job.
#include "worker/comm/mpi_session.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include "mpi_test_util.h"
#include "worker/comm/collective_error.h"

namespace dsmath {
namespace {

TEST(MpiSession, NestedSessionLeavesMpiRunning) {
  // main() owns MPI; a second session (a library entry point) must neither re-init nor finalize.
  {
    int argc = 0;
    char** argv = nullptr;
    MpiSession inner(&argc, &argv);
    EXPECT_EQ(inner.topology(), Topology::from_mpi());
  }
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_EQ(finalized, 0);
  int thread_level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&thread_level);
  EXPECT_GE(thread_level, MPI_THREAD_FUNNELED);
}

TEST(MpiSession, RunReturnsTheBodysExitCode) {
  int argc = 0;
  char** argv = nullptr;
  MpiSession session(&argc, &argv);
  EXPECT_EQ(session.run("prog", [] { return 0; }), 0);
  EXPECT_EQ(session.run("prog", [] { return 3; }), 3);
}

TEST(MpiSession, RunExitsEveryRankCleanlyOnACollectiveError) {
  int argc = 0;
  char** argv = nullptr;
  MpiSession session(&argc, &argv);
  auto comm = make_mpi_communicator();
  const int last = test::world_size() - 1, rank = test::world_rank();
  testing::internal::CaptureStderr();
  const int code = session.run("dsmath-worker", [&] {
    collectively(*comm, [&] {
      if (rank == last) fail("tp 3 does not divide 32 heads");
    });
    return 0;
  });
  const std::string printed = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, 1);
  // One line for the whole job, from rank 0.
  EXPECT_EQ(printed, rank == 0 ? cat("dsmath-worker: error: rank ", last,
                                     ": tp 3 does not divide 32 heads\n")
                               : "");
  comm->barrier();
}

TEST(MpiSession, RunInOneProcessReturnsOneForAnyError) {
  if (test::world_size() != 1) GTEST_SKIP() << "one rank only: with more, the job would abort";
  int argc = 0;
  char** argv = nullptr;
  MpiSession session(&argc, &argv);
  testing::internal::CaptureStderr();
  const int code = session.run("prog", []() -> int { fail("no such checkpoint"); });
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "prog: error: no such checkpoint\n");
  EXPECT_EQ(code, 1);
}

}  // namespace
}  // namespace dsmath
