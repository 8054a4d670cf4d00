#include "worker/comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "worker/comm/checked_call.h"

namespace dsmath {

MpiCommunicator::MpiCommunicator(MPI_Comm comm, size_t max_chunk) : max_chunk_(max_chunk) {
  DSMATH_CHECK(max_chunk >= 1 && max_chunk <= kMaxChunk, "MPI communicator: chunk of ", max_chunk,
               " elements is outside 1..", kMaxChunk);
  int initialized = 0;
  MPI_Initialized(&initialized);
  DSMATH_CHECK(initialized,
               "MPI communicator: MPI is not initialized (create an MpiSession first)");
  DSMATH_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  // Errors on our own communicator become exceptions (DSMATH_MPI_CHECK) instead of killing the job.
  DSMATH_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  topology_ = Topology::from_mpi(comm_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check_root(int root, const char* what) const {
  DSMATH_CHECK(root >= 0 && root < topology_.world_size, what, ": root ", root,
               " is outside a group of ", topology_.world_size, " ranks");
}

void MpiCommunicator::all_reduce_sum(float* data, size_t count) {
  for (size_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(count - done, max_chunk_));
    DSMATH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, comm_));
    done += n;
  }
}

void MpiCommunicator::all_gather(const float* send, size_t count_per_rank, float* recv) {
  if (count_per_rank == 0) return;
  const size_t ranks = topology_.world_size;
  const int rank = topology_.rank;
  float* own = recv + rank * count_per_rank;
  const bool in_place = send == own;
  // MPI forbids overlapping send and receive buffers except through MPI_IN_PLACE.
  const auto send_begin = reinterpret_cast<uintptr_t>(send);
  const auto recv_begin = reinterpret_cast<uintptr_t>(recv);
  const size_t send_bytes = count_per_rank * sizeof(float);
  DSMATH_CHECK(in_place || send_begin + send_bytes <= recv_begin ||
                   send_begin >= recv_begin + ranks * send_bytes,
               "all_gather: the send buffer overlaps the receive buffer outside this rank's slot");
  if (count_per_rank * ranks <= max_chunk_) {
    DSMATH_MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(count_per_rank),
                                   MPI_FLOAT, recv, static_cast<int>(count_per_rank), MPI_FLOAT,
                                   comm_));
    return;
  }
  // Piecewise: gather piece [done, done + n) of every rank, then scatter the pieces into place.
  const size_t piece = std::max<size_t>(1, max_chunk_ / ranks);
  std::vector<float> mine(std::min(count_per_rank, piece));
  std::vector<float> gathered(mine.size() * ranks);
  for (size_t done = 0; done < count_per_rank;) {
    const size_t n = std::min(count_per_rank - done, piece);
    std::memcpy(mine.data(), send + done, n * sizeof(float));
    DSMATH_MPI_CHECK(MPI_Allgather(mine.data(), static_cast<int>(n), MPI_FLOAT, gathered.data(),
                                   static_cast<int>(n), MPI_FLOAT, comm_));
    for (size_t r = 0; r < ranks; ++r)
      std::memcpy(recv + r * count_per_rank + done, gathered.data() + r * n, n * sizeof(float));
    done += n;
  }
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  check_root(root, "broadcast");
  auto* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes;) {
    const int n = static_cast<int>(std::min(bytes - done, max_chunk_));
    DSMATH_MPI_CHECK(MPI_Bcast(p + done, n, MPI_BYTE, root, comm_));
    done += n;
  }
}

// MPI's blocking collectives busy-poll: an idle follower would burn a core. A non-blocking
// broadcast polled with MPI_Test spins only briefly (the next plan of a busy group is usually
// there within microseconds), then sleeps between polls, backing off to 2 ms: an idle follower
// costs about 1% of a core, and a plan reaches the group within a few milliseconds.
void MpiCommunicator::await_broadcast(void* data, size_t bytes, int root) {
  check_root(root, "await_broadcast");
  DSMATH_CHECK(bytes <= max_chunk_, "await_broadcast: ", bytes, " bytes is more than one piece (",
               max_chunk_, "); use broadcast for bulk data");
  MPI_Request request;
  DSMATH_MPI_CHECK(MPI_Ibcast(data, int(bytes), MPI_BYTE, root, comm_, &request));
  using Clock = std::chrono::steady_clock;
  const auto spin_until = Clock::now() + std::chrono::microseconds(200);
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    DSMATH_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (Clock::now() < spin_until) continue;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(2000));
  }
}

void MpiCommunicator::barrier() {
  DSMATH_MPI_CHECK(MPI_Barrier(comm_));
}

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace dsmath
