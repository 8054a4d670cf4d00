// Topology: built from MPI once, one tensor-parallel group over the whole job.
#include "worker/comm/topology.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "mpi_test_util.h"
#include "worker/comm/communicator.h"

namespace dsmath {
namespace {

TEST(Topology, FromMpiMatchesTheWorld) {
  const Topology t = Topology::from_mpi();
  EXPECT_EQ(t.world_size, test::world_size());
  EXPECT_EQ(t.rank, test::world_rank());
  EXPECT_EQ(t.tp_size, t.world_size);
  EXPECT_EQ(t.tp_rank, t.rank);
  EXPECT_EQ(t.is_driver(), t.rank == 0);
  EXPECT_EQ(make_mpi_communicator()->topology(), t);
}

TEST(Topology, RanksAreDistinctAndExactlyOneDrives) {
  const Topology t = Topology::from_mpi();
  std::vector<int> ranks(t.world_size, -1), drivers(t.world_size, -1);
  int driver = t.is_driver() ? 1 : 0;
  MPI_Allgather(&t.tp_rank, 1, MPI_INT, ranks.data(), 1, MPI_INT, MPI_COMM_WORLD);
  MPI_Allgather(&driver, 1, MPI_INT, drivers.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int driver_count = 0;
  for (int r = 0; r < t.world_size; ++r) {
    EXPECT_EQ(ranks[r], r);
    driver_count += drivers[r];
  }
  EXPECT_EQ(driver_count, 1);
  EXPECT_EQ(drivers[0], 1);
}

TEST(Topology, FromASubCommunicator) {
  DSMATH_REQUIRE_WORLD_SIZE(2);
  const int rank = test::world_rank(), size = test::world_size();
  MPI_Comm half = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
  const Topology t = Topology::from_mpi(half);
  MPI_Comm_free(&half);
  EXPECT_EQ(t.world_size, rank % 2 == 0 ? (size + 1) / 2 : size / 2);
  EXPECT_EQ(t.rank, rank / 2);
  EXPECT_EQ(t.tp_rank, rank / 2);
  EXPECT_EQ(t.is_driver(), rank < 2);
}

TEST(Topology, TensorParallelLayout) {
  const Topology t = Topology::tensor_parallel(4, 3);
  EXPECT_EQ(t, (Topology{4, 3, 4, 3}));
  EXPECT_FALSE(t.is_driver());
  EXPECT_EQ(t.describe(), "rank 3/4 (tp 3/4)");
  EXPECT_EQ(Topology{}, Topology::tensor_parallel(1, 0));
  EXPECT_TRUE(Topology{}.is_driver());
}

TEST(Topology, RejectsImpossibleLayouts) {
  EXPECT_THROW(Topology::tensor_parallel(0, 0), Error);
  EXPECT_THROW(Topology::tensor_parallel(2, 2), Error);
  EXPECT_THROW(Topology::tensor_parallel(2, -1), Error);
  try {
    Topology::tensor_parallel(2, 5);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "topology: rank 5 is outside a world of 2 ranks");
  }
}

}  // namespace
}  // namespace dsmath
