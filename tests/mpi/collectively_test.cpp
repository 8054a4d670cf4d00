// collectively(): an error on some ranks reaches every rank as the same Error, and nobody hangs.
// Each test ends with collectives on the same communicator, which only complete if every rank
// came out of collectively() (the test main's watchdog turns a hang into a failure).
#include "worker/comm/collective_error.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "mpi_test_util.h"
#include "worker/comm/communicator.h"

namespace dsmath {
namespace {

// What collectively() threw on this rank ("" when it returned normally).
std::string outcome(const Communicator& comm, const std::function<void()>& fn) {
  try {
    collectively(comm, fn);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

// The outcome on rank 0, which every rank must also have seen.
void expect_same_everywhere(Communicator& comm, const std::string& mine,
                            const std::string& expected) {
  EXPECT_EQ(mine, expected) << "on " << comm.topology().describe();
  std::string from_rank0 = mine;
  broadcast_string(comm, from_rank0, 0);
  EXPECT_EQ(mine, from_rank0) << "ranks disagree";
}

TEST(Collectively, RunsOnEveryRankAndReturnsWhenNothingFails) {
  auto comm = make_mpi_communicator();
  int runs = 0;
  collectively(*comm, [&] { ++runs; });
  EXPECT_EQ(runs, 1);
  float total = static_cast<float>(runs);
  comm->all_reduce_sum(&total, 1);
  EXPECT_EQ(total, static_cast<float>(comm->topology().world_size));
}

TEST(Collectively, FailureOnOneRankReachesEveryRank) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  for (int failing = 0; failing < t.world_size; ++failing) {
    const std::string mine = outcome(*comm, [&] {
      if (t.rank == failing)
        fail("shard model-0000", failing + 1, "-of-000004.safetensors is missing");
    });
    expect_same_everywhere(*comm, mine,
                           cat("rank ", failing, ": shard model-0000", failing + 1,
                               "-of-000004.safetensors is missing"));
  }
  comm->barrier();
  EXPECT_EQ(outcome(*comm, [] {}), "") << "usable again after errors";
}

TEST(Collectively, FailureOnEveryRankReportsTheLowest) {
  auto comm = make_mpi_communicator();
  const int rank = comm->topology().rank;
  const std::string mine = outcome(*comm, [&] {
    fail("tp ", comm->topology().world_size, " does not divide 7 heads (seen by rank ", rank, ")");
  });
  expect_same_everywhere(
      *comm, mine,
      cat("rank 0: tp ", comm->topology().world_size, " does not divide 7 heads (seen by rank 0)"));
}

TEST(Collectively, FailureOnSomeRanksReportsTheLowestFailing) {
  DSMATH_REQUIRE_WORLD_SIZE(2);
  auto comm = make_mpi_communicator();
  const int rank = comm->topology().rank;
  // Odd ranks fail, so rank 0 succeeds locally and still has to throw rank 1's message.
  const std::string mine = outcome(*comm, [&] {
    if (rank % 2 == 1) fail("out of memory on rank ", rank);
  });
  expect_same_everywhere(*comm, mine, "rank 1: out of memory on rank 1");
}

TEST(Collectively, AnyExceptionTakesPart) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  const int last = t.world_size - 1;
  std::string mine = outcome(*comm, [&] {
    if (t.rank == last) throw std::runtime_error("std::runtime_error from the last rank");
  });
  expect_same_everywhere(*comm, mine,
                         cat("rank ", last, ": std::runtime_error from the last rank"));
  mine = outcome(*comm, [&] {
    if (t.rank == last) throw 42;
  });
  expect_same_everywhere(*comm, mine, cat("rank ", last, ": unknown exception"));
}

TEST(Collectively, EmptyAndLongMessages) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  const int last = t.world_size - 1;
  std::string mine = outcome(*comm, [&] {
    if (t.rank == last) throw Error("");
  });
  expect_same_everywhere(*comm, mine, cat("rank ", last, ": "));
  const std::string long_message(200000, 'm');
  mine = outcome(*comm, [&] {
    if (t.rank == last) throw Error(long_message);
  });
  expect_same_everywhere(*comm, mine, cat("rank ", last, ": ", long_message));
}

TEST(Collectively, OnARawMpiCommunicatorAndOnSubgroups) {
  DSMATH_REQUIRE_WORLD_SIZE(2);
  const int rank = test::world_rank();
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
  // Only the even group fails; the odd group agrees among itself that all went well.
  std::string mine;
  try {
    collectively(half, [&] {
      if (rank % 2 == 0 && rank >= 2) fail("even rank ", rank, " failed");
    });
  } catch (const Error& e) {
    mine = e.what();
  }
  const bool even_group_fails = rank % 2 == 0 && test::world_size() >= 3;
  EXPECT_EQ(mine, even_group_fails ? "rank 1: even rank 2 failed" : "") << "world rank " << rank;
  MPI_Comm_free(&half);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(Collectively, ACommunicatorWithoutMpiRunsLocally) {
  struct Local final : Communicator {
    Topology t;
    const Topology& topology() const override { return t; }
    void all_reduce_sum(float*, size_t) override {}
    void all_gather(const float*, size_t, float*) override {}
    void broadcast(void*, size_t, int) override {}
    void barrier() override {}
  } local;
  int runs = 0;
  collectively(local, [&] { ++runs; });
  EXPECT_EQ(runs, 1);
  try {
    collectively(local, [] { fail("bad tp"); });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank 0: bad tp");
  }
}

}  // namespace
}  // namespace dsmath
