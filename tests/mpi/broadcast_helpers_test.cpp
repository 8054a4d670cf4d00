// broadcast_string / broadcast_vector / broadcast_value: how rank 0 sends each step's plan.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "mpi_test_util.h"
#include "worker/comm/communicator.h"

namespace dsmath {
namespace {

TEST(BroadcastHelpers, StringFromTheLastRank) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  const int root = t.world_size - 1;
  const std::string sent =
      std::string("plan\0with a NUL, UTF-8 \xce\xbb and ", 30) + std::string(100000, 'x');
  // Receivers start longer, shorter and empty: the size travels with the bytes.
  std::string text = t.rank == root ? sent : std::string(t.rank % 2 ? 200000 : 3, '#');
  broadcast_string(*comm, text, root);
  EXPECT_EQ(text.size(), sent.size());
  EXPECT_EQ(text, sent);

  std::string empty = t.rank == 0 ? "" : "not empty";
  broadcast_string(*comm, empty, 0);
  EXPECT_EQ(empty, "");
}

TEST(BroadcastHelpers, VectorOfInt32) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  std::vector<int32_t> plan;
  if (t.is_driver())
    for (int32_t i = 0; i < 10000; ++i) plan.push_back(i % 2 ? -i : i * 65537);
  else
    plan.assign(t.rank * 5, 42);
  broadcast_vector(*comm, plan, 0);
  ASSERT_EQ(plan.size(), 10000u);
  for (int32_t i = 0; i < 10000; ++i) ASSERT_EQ(plan[i], i % 2 ? -i : i * 65537) << i;

  std::vector<int32_t> none = t.is_driver() ? std::vector<int32_t>{} : std::vector<int32_t>{1, 2};
  broadcast_vector(*comm, none, 0);
  EXPECT_TRUE(none.empty());
}

TEST(BroadcastHelpers, ValueFromANonZeroRoot) {
  DSMATH_REQUIRE_WORLD_SIZE(2);
  struct Header {
    int32_t step;
    int32_t sequences;
    double temperature;
  };
  auto comm = make_mpi_communicator();
  Header h = comm->topology().rank == 1 ? Header{17, 16, 0.7} : Header{0, 0, 0.0};
  broadcast_value(*comm, h, 1);
  EXPECT_EQ(h.step, 17);
  EXPECT_EQ(h.sequences, 16);
  EXPECT_EQ(h.temperature, 0.7);
}

}  // namespace
}  // namespace dsmath
