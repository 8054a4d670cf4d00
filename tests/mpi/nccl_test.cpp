// The NCCL backend. Without a GPU (CI) this checks that it builds, links, reports CUDA/NCCL
// errors through the checked-call macros, and fails cleanly and alike on every rank. With one
// GPU per rank it checks the collectives on device memory against the same expectations as the
// MPI backend.
#include "worker/comm/nccl_communicator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mpi_test_util.h"
#include "worker/comm/collective_error.h"
#include "worker/comm/cuda_check.h"

namespace dsmath {
namespace {

int gpu_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

std::string construction_error(int device) {
  try {
    make_nccl_communicator(MPI_COMM_WORLD, device);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CheckedCalls, NcclErrorsNameCallFileAndLine) {
  try {
    DSMATH_NCCL_CHECK(ncclInvalidArgument);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "ncclInvalidArgument failed at ")) << what;
    EXPECT_TRUE(contains(what, "nccl_test.cpp:")) << what;
    EXPECT_TRUE(contains(what, ncclGetErrorString(ncclInvalidArgument))) << what;
  }
  EXPECT_NO_THROW(DSMATH_NCCL_CHECK(ncclSuccess));
}

TEST(CheckedCalls, CudaErrorsNameCallFileAndLine) {
  try {
    DSMATH_CUDA_CHECK(cudaErrorInvalidValue);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "cudaErrorInvalidValue failed at ")) << what;
    EXPECT_TRUE(contains(what, "nccl_test.cpp:")) << what;
    EXPECT_TRUE(contains(what, ": cudaErrorInvalidValue: ")) << what;
  }
  EXPECT_NO_THROW(DSMATH_CUDA_CHECK(cudaSuccess));
}

TEST(NcclCommunicator, WithoutAGpuEveryRankGetsRankZerosError) {
  if (gpu_count() > 0) GTEST_SKIP() << "this machine has a GPU";
  const std::string what = construction_error(0);
  EXPECT_EQ(what.rfind("rank 0: cudaSetDevice(device) failed at ", 0), 0u) << what;
  std::string from_rank0 = what;
  broadcast_string(*make_mpi_communicator(), from_rank0, 0);
  EXPECT_EQ(what, from_rank0);
}

TEST(NcclCommunicator, BadDeviceOnOneRankFailsEveryRank) {
  const int last = test::world_size() - 1, rank = test::world_rank();
  const int count = gpu_count();
  const std::string what = construction_error(rank == last ? -1 : (count > 0 ? rank % count : 0));
  EXPECT_EQ(what.rfind("rank ", 0), 0u) << what;
  if (count > 0) {  // with GPUs only the last rank fails: its message is the one everyone sees
    EXPECT_EQ(what, cat("rank ", last, ": NCCL communicator: device -1 is negative"));
  }
}

// The remaining tests need a GPU for every rank (NCCL does not share a GPU between ranks).
class NcclOnGpus : public testing::Test {
 protected:
  void SetUp() override {
    if (gpu_count() < test::world_size())
      GTEST_SKIP() << "needs one GPU per rank: " << gpu_count() << " GPU(s), " << test::world_size()
                   << " rank(s)";
    comm_ = make_nccl_communicator(MPI_COMM_WORLD, test::world_rank());
  }

  float* to_device(const std::vector<float>& host) {
    float* device = nullptr;
    DSMATH_CUDA_CHECK(cudaMalloc(&device, std::max<size_t>(1, host.size()) * sizeof(float)));
    buffers_.push_back(device);
    DSMATH_CUDA_CHECK(
        cudaMemcpy(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
    return device;
  }
  static std::vector<float> to_host(const float* device, size_t count) {
    std::vector<float> host(count);
    DSMATH_CUDA_CHECK(
        cudaMemcpy(host.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost));
    return host;
  }
  void TearDown() override {
    for (float* b : buffers_) cudaFree(b);
  }

  std::unique_ptr<Communicator> comm_;
  std::vector<float*> buffers_;
};

TEST_F(NcclOnGpus, AllReduceSum) {
  const Topology& t = comm_->topology();
  for (size_t count : {size_t{0}, size_t{1}, size_t{4097}, size_t{1} << 20}) {
    std::vector<float> host(count);
    for (size_t i = 0; i < count; ++i) host[i] = static_cast<float>((t.rank + 1) * (i % 97));
    float* data = to_device(host);
    comm_->all_reduce_sum(data, count);
    const auto result = to_host(data, count);
    const float factor = t.world_size * (t.world_size + 1) / 2.f;
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(result[i], factor * (i % 97)) << count << "/" << i;
  }
}

TEST_F(NcclOnGpus, AllGatherOrdersByRankAndWorksInPlace) {
  const Topology& t = comm_->topology();
  const size_t n = 1000;
  std::vector<float> mine(n), slots(n * t.world_size, -1.f);
  for (size_t i = 0; i < n; ++i) mine[i] = t.rank * 10000.f + i;
  float* send = to_device(mine);
  float* recv = to_device(slots);
  comm_->all_gather(send, n, recv);
  auto result = to_host(recv, n * t.world_size);
  for (int r = 0; r < t.world_size; ++r)
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(result[r * n + i], r * 10000.f + i);

  std::copy(mine.begin(), mine.end(), slots.begin() + t.rank * n);
  float* in_place = to_device(slots);
  comm_->all_gather(in_place + t.rank * n, n, in_place);
  EXPECT_EQ(to_host(in_place, n * t.world_size), result);
}

TEST_F(NcclOnGpus, BroadcastFromEveryRootAndBarrier) {
  const Topology& t = comm_->topology();
  for (int root = 0; root < t.world_size; ++root) {
    std::vector<float> host(333, t.rank == root ? root + 0.5f : -1.f);
    float* data = to_device(host);
    comm_->broadcast(data, host.size() * sizeof(float), root);
    EXPECT_EQ(to_host(data, host.size()), std::vector<float>(333, root + 0.5f));
  }
  EXPECT_THROW(comm_->broadcast(nullptr, 4, t.world_size), Error);
  comm_->barrier();
}

// Pipeline stages' activations: rank r sends to r + 1 (a ring), each message its own size.
TEST_F(NcclOnGpus, SendRecvBetweenNeighbours) {
  const Topology& t = comm_->topology();
  if (t.world_size < 2) GTEST_SKIP() << "needs two ranks";
  const int next = (t.rank + 1) % t.world_size,
            previous = (t.rank + t.world_size - 1) % t.world_size;
  const size_t mine = 1000 + size_t(t.rank), theirs = 1000 + size_t(previous);
  float* out = to_device(std::vector<float>(mine, t.rank + 0.25f));
  float* in = to_device(std::vector<float>(theirs, -1.f));
  // Even ranks send first, odd ranks receive first, so that blocking pairs never wait on each
  // other.
  if (t.rank % 2 == 0) {
    comm_->send(out, mine, next);
    comm_->recv(in, theirs, previous);
  } else {
    comm_->recv(in, theirs, previous);
    comm_->send(out, mine, next);
  }
  EXPECT_EQ(to_host(in, theirs), std::vector<float>(theirs, previous + 0.25f));
  EXPECT_THROW(comm_->send(out, 1, t.rank), Error) << "not to itself";
}

}  // namespace
}  // namespace dsmath
