// The MPI backend of Communicator at 1, 2 and 4 ranks: results, ordering, roots, piecewise
// transfers (as large buffers go), and MPI errors surfacing as dsmath::Error.
#include "worker/comm/mpi_communicator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "mpi_test_util.h"
#include "worker/comm/checked_call.h"

namespace dsmath {
namespace {

// Small integers, so every sum is exact in float and results compare with ==.
float exact_value(int rank, size_t i) {
  return static_cast<float>((rank + 1) * static_cast<int>(i % 97) - static_cast<int>(i % 13));
}

void expect_all_reduce_sum(Communicator& comm, size_t count) {
  const Topology& t = comm.topology();
  std::vector<float> data(count + 1);
  for (size_t i = 0; i < count; ++i) data[i] = exact_value(t.rank, i);
  data[count] = -1.5f;  // just past the end: must stay untouched
  comm.all_reduce_sum(data.data(), count);
  size_t wrong = 0;
  for (size_t i = 0; i < count; ++i) {
    float expected = 0;
    for (int r = 0; r < t.world_size; ++r) expected += exact_value(r, i);
    if (data[i] != expected && wrong++ < 5)
      ADD_FAILURE() << "count " << count << " element " << i << ": " << data[i]
                    << " != " << expected;
  }
  EXPECT_EQ(wrong, 0u) << "count " << count;
  EXPECT_EQ(data[count], -1.5f);
}

TEST(MpiCommunicator, AllReduceSumOfEverySize) {
  auto comm = make_mpi_communicator();
  for (size_t count : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{1} << 20})
    expect_all_reduce_sum(*comm, count);
  comm->all_reduce_sum(nullptr, 0);  // nothing to reduce: no pointer needed
}

TEST(MpiCommunicator, AllReduceSumInPieces) {
  MpiCommunicator comm(MPI_COMM_WORLD, /*max_chunk=*/7);
  for (size_t count : {size_t{6}, size_t{7}, size_t{8}, size_t{1000}})
    expect_all_reduce_sum(comm, count);
}

TEST(MpiCommunicator, AllReduceSumGivesEveryRankTheSameBits) {
  // Tensor-parallel ranks each continue from the reduced activations; if their bits differed,
  // their shards of the next layer would see different inputs.
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  const size_t count = 100003;
  auto make = [&](int rank) {
    std::mt19937 rng(1234 + rank);
    std::normal_distribution<float> normal(0.f, 3.f);
    std::vector<float> v(count);
    for (auto& x : v) x = normal(rng);
    return v;
  };
  std::vector<float> data = make(t.rank);
  comm->all_reduce_sum(data.data(), count);

  std::vector<float> from_rank0 = data;
  comm->broadcast(from_rank0.data(), count * sizeof(float), 0);
  EXPECT_EQ(std::memcmp(from_rank0.data(), data.data(), count * sizeof(float)), 0);

  std::vector<double> exact(count, 0.0);
  for (int r = 0; r < t.world_size; ++r) {
    const auto v = make(r);
    for (size_t i = 0; i < count; ++i) exact[i] += v[i];
  }
  for (size_t i = 0; i < count; i += 97) ASSERT_NEAR(data[i], exact[i], 1e-4) << i;
}

void expect_all_gather(Communicator& comm, size_t n, bool in_place) {
  const Topology& t = comm.topology();
  std::vector<float> recv(n * t.world_size + 1, -7.f);
  std::vector<float> send(n);
  float* own = recv.data() + t.rank * n;
  for (size_t i = 0; i < n; ++i) (in_place ? own : send.data())[i] = t.rank * 1000.f + i % 1000;
  comm.all_gather(in_place ? own : send.data(), n, recv.data());
  size_t wrong = 0;
  for (int r = 0; r < t.world_size; ++r)
    for (size_t i = 0; i < n; ++i)
      if (recv[r * n + i] != r * 1000.f + i % 1000 && wrong++ < 5)
        ADD_FAILURE() << "n " << n << ": slot of rank " << r << " element " << i << " is "
                      << recv[r * n + i];
  EXPECT_EQ(wrong, 0u) << "n " << n << (in_place ? " in place" : "");
  EXPECT_EQ(recv.back(), -7.f) << "wrote past the end";
}

TEST(MpiCommunicator, AllGatherOrdersByRank) {
  auto comm = make_mpi_communicator();
  for (size_t n : {size_t{0}, size_t{1}, size_t{3}, size_t{1} << 18}) {
    expect_all_gather(*comm, n, /*in_place=*/false);
    expect_all_gather(*comm, n, /*in_place=*/true);
  }
}

TEST(MpiCommunicator, AllGatherInPieces) {
  MpiCommunicator comm(MPI_COMM_WORLD, /*max_chunk=*/5);
  for (size_t n : {size_t{1}, size_t{2}, size_t{11}, size_t{300}}) {
    expect_all_gather(comm, n, false);
    expect_all_gather(comm, n, true);
  }
}

TEST(MpiCommunicator, AllGatherRejectsOverlapOutsideOwnSlot) {
  auto comm = make_mpi_communicator();
  const int size = comm->topology().world_size;
  std::vector<float> recv(4 * size + 1);
  // Starts one float into the buffer: never exactly this rank's slot, always overlapping.
  EXPECT_THROW(comm->all_gather(recv.data() + 4 * comm->topology().rank + 1, 4, recv.data()),
               Error);
}

TEST(MpiCommunicator, BroadcastFromEveryRoot) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{13}, size_t{1} << 20}) {
    for (int root = 0; root < t.world_size; ++root) {
      auto pattern = [&](size_t i) { return static_cast<uint8_t>(i * 31 + root * 7 + 1); };
      std::vector<uint8_t> data(bytes + 1, 0);
      if (t.rank == root)
        for (size_t i = 0; i < bytes; ++i) data[i] = pattern(i);
      comm->broadcast(data.data(), bytes, root);
      size_t wrong = 0;
      for (size_t i = 0; i < bytes; ++i) wrong += data[i] != pattern(i);
      EXPECT_EQ(wrong, 0u) << bytes << " bytes from root " << root;
      EXPECT_EQ(data[bytes], 0) << "wrote past the end";
    }
  }
}

// await_broadcast delivers like broadcast, from any root, in order with broadcasts around it,
// whether receivers spin or sleep.
TEST(MpiCommunicator, AwaitBroadcastFromEveryRootSpinningOrSleeping) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  for (auto spin : {std::chrono::microseconds(0), std::chrono::microseconds(50000)})
    for (int root = 0; root < t.world_size; ++root) {
      uint64_t value = t.rank == root ? 0xD5D5000000000000ull + uint64_t(root) : 0;
      std::vector<int32_t> body(5, t.rank == root ? root + 1 : 0);
      if (t.rank != root) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      comm->await_broadcast(&value, sizeof(value), root, spin);
      comm->broadcast(body.data(), body.size() * sizeof(int32_t), root);
      EXPECT_EQ(value, 0xD5D5000000000000ull + uint64_t(root));
      EXPECT_EQ(body, std::vector<int32_t>(5, root + 1));
    }
}

// The pipeline's non-blocking calls: the root of broadcast_nowait returns before anyone receives
// (several messages queue up, the root's buffer may change at once), and async sends of
// several sizes arrive in order at receives posted before or after them, up to a bound.
TEST(MpiCommunicator, BroadcastNowaitAndAsyncSendsArriveInOrder) {
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  constexpr int kMessages = 3;
  const size_t sizes[kMessages] = {5, 1 << 20, 0};
  for (int m = 0; m < kMessages; ++m) {
    std::vector<int32_t> words(sizes[m] + 1, t.rank == 0 ? m + 1 : -1);
    comm->broadcast_nowait(words.data(), sizes[m] * sizeof(int32_t), 0);
    if (t.rank == 0) std::fill(words.begin(), words.end(), -7);  // the copy went out, not this
    if (t.rank != 0) {
      EXPECT_EQ(std::count(words.begin(), words.end() - 1, m + 1), int64_t(sizes[m])) << m;
      EXPECT_EQ(words.back(), -1) << "wrote past the end";
    }
  }
  if (t.world_size == 1) return;
  const int last = t.world_size - 1;
  auto message = [&](int m) { return std::vector<char>(sizes[m], char('a' + m)); };
  if (t.rank == 0) {
    uint64_t early = comm->recv_async(sizes[0], last);  // posted before the send
    comm->barrier();
    // Receives take at most their size: a larger bound gets what was sent.
    uint64_t later[2] = {comm->recv_async(sizes[1] + 100, last), comm->recv_async(8, last)};
    EXPECT_EQ(comm->wait_recv(early), message(0));
    EXPECT_EQ(comm->wait_recv(later[0]), message(1));
    EXPECT_EQ(comm->wait_recv(later[1]), message(2));
    EXPECT_THROW(comm->wait_recv(early), Error) << "a ticket is used once";
  } else {
    if (t.rank == last)
      for (int m = 0; m < kMessages; ++m) comm->send_async(message(m), 0);
    comm->barrier();
  }
}

TEST(MpiCommunicator, BroadcastInPieces) {
  MpiCommunicator comm(MPI_COMM_WORLD, /*max_chunk=*/3);
  const Topology& t = comm.topology();
  const int root = t.world_size - 1;
  std::string text =
      t.rank == root ? "a broadcast cut into three-byte pieces" : std::string(38, '?');
  comm.broadcast(text.data(), text.size(), root);
  EXPECT_EQ(text, "a broadcast cut into three-byte pieces");
}

TEST(MpiCommunicator, BroadcastRejectsARootOutsideTheGroup) {
  auto comm = make_mpi_communicator();
  char byte = 0;
  try {
    comm->broadcast(&byte, 1, comm->topology().world_size);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("root"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm->broadcast(&byte, 1, -1), Error);
}

TEST(MpiCommunicator, BarrierWaitsForEveryRank) {
  // Every rank drops a file, the later ranks later; after the barrier all files must exist.
  namespace fs = std::filesystem;
  auto comm = make_mpi_communicator();
  const Topology& t = comm->topology();
  std::string dir;
  if (t.is_driver()) {
    dir = (fs::temp_directory_path() / ("dsmath-barrier-" + std::to_string(::getpid()))).string();
    fs::create_directories(dir);
  }
  broadcast_string(*comm, dir, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50 * t.rank));
  std::ofstream(dir + "/" + std::to_string(t.rank)) << t.rank;
  comm->barrier();
  for (int r = 0; r < t.world_size; ++r)
    EXPECT_TRUE(fs::exists(dir + "/" + std::to_string(r))) << "rank " << r << " not there yet";
  comm->barrier();  // nobody removes the folder while another rank still looks
  if (t.is_driver()) fs::remove_all(dir);
}

TEST(MpiCommunicator, CommunicatorsAreIndependentOfEachOther) {
  // Each communicator duplicates the MPI communicator, so two of them (say the control plane and
  // the tensor traffic) can never mix up their messages.
  auto a = make_mpi_communicator();
  auto b = make_mpi_communicator();
  EXPECT_NE(a->control_comm(), b->control_comm());
  int ident = MPI_UNEQUAL;
  MPI_Comm_compare(a->control_comm(), MPI_COMM_WORLD, &ident);
  EXPECT_EQ(ident, MPI_CONGRUENT);
  float x = 1.f, y = 2.f;
  a->all_reduce_sum(&x, 1);
  b->all_reduce_sum(&y, 1);
  EXPECT_EQ(x, static_cast<float>(a->topology().world_size));
  EXPECT_EQ(y, 2.f * b->topology().world_size);
}

TEST(MpiCommunicator, MpiErrorsBecomeErrorsNamingCallFileAndLine) {
  auto comm = make_mpi_communicator();
  int value = 0;
  // An invalid root is caught by MPI's argument checks before any message moves, on every rank.
  try {
    DSMATH_MPI_CHECK(MPI_Bcast(&value, 1, MPI_INT, -5, comm->control_comm()));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("MPI_Bcast(&value, 1, MPI_INT, -5, comm->control_comm()) failed at "),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("communicator_test.cpp:"), std::string::npos) << what;
    EXPECT_NE(what.find("MPI error"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace dsmath
