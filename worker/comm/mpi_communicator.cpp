#include "worker/comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "worker/comm/checked_call.h"
#include "worker/comm/collective_watchdog.h"

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
  if (!finalized) {
    try {
      reap_sends(/*wait_all=*/true);
    } catch (const Error&) {
      // A peer is gone; there is nobody left to deliver to.
    }
    for (auto& [ticket, t] : recvs_) {  // never collected: nobody will send them now
      MPI_Cancel(&t.request);
      MPI_Request_free(&t.request);
    }
  }
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::check_root(int root, const char* what) const {
  DSMATH_CHECK(root >= 0 && root < topology_.world_size, what, ": root ", root,
               " is outside a group of ", topology_.world_size, " ranks");
}

void MpiCommunicator::all_reduce_sum(float* data, size_t count) {
  CollectiveWatchdog::Watch watch("all_reduce");
  for (size_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(count - done, max_chunk_));
    DSMATH_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data + done, n, MPI_FLOAT, MPI_SUM, comm_));
    done += n;
  }
}

void MpiCommunicator::all_gather(const float* send, size_t count_per_rank, float* recv) {
  CollectiveWatchdog::Watch watch("all_gather");
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

void MpiCommunicator::send(const float* data, size_t count, int dest) {
  CollectiveWatchdog::Watch watch("send (to the next pipeline stage)");
  check_root(dest, "send");
  DSMATH_CHECK(dest != topology_.rank, "send: rank ", dest, " is this rank");
  for (size_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(count - done, max_chunk_));
    DSMATH_MPI_CHECK(MPI_Send(data + done, n, MPI_FLOAT, dest, kPointToPointTag, comm_));
    done += n;
  }
}

void MpiCommunicator::recv(float* data, size_t count, int source) {
  CollectiveWatchdog::Watch watch("recv (from the previous pipeline stage)");
  check_root(source, "recv");
  DSMATH_CHECK(source != topology_.rank, "recv: rank ", source, " is this rank");
  for (size_t done = 0; done < count;) {
    const int n = static_cast<int>(std::min(count - done, max_chunk_));
    MPI_Status status;
    DSMATH_MPI_CHECK(MPI_Recv(data + done, n, MPI_FLOAT, source, kPointToPointTag, comm_, &status));
    int received = 0;
    DSMATH_MPI_CHECK(MPI_Get_count(&status, MPI_FLOAT, &received));
    DSMATH_CHECK(received == n, "recv: ", received, " floats from rank ", source, ", expected ", n);
    done += n;
  }
}

void MpiCommunicator::reap_sends(bool wait_all) {
  while (!sends_.empty()) {
    int done = 0;
    if (wait_all) {
      DSMATH_MPI_CHECK(MPI_Wait(&sends_.front().request, MPI_STATUS_IGNORE));
      done = 1;
    } else {
      DSMATH_MPI_CHECK(MPI_Test(&sends_.front().request, &done, MPI_STATUS_IGNORE));
    }
    if (!done) return;
    sends_.pop_front();
  }
}

void MpiCommunicator::send_async(std::vector<char> data, int dest) {
  check_root(dest, "send");
  DSMATH_CHECK(data.size() <= size_t(INT_MAX), "send: ", data.size(),
               " bytes in one message (at most ", INT_MAX, ")");
  reap_sends(/*wait_all=*/false);
  Transfer& t = sends_.emplace_back();
  t.data = std::move(data);
  DSMATH_MPI_CHECK(MPI_Isend(t.data.data(), int(t.data.size()), MPI_BYTE, dest, kPointToPointTag,
                             comm_, &t.request));
}

uint64_t MpiCommunicator::recv_async(size_t max_bytes, int source) {
  check_root(source, "recv");
  DSMATH_CHECK(max_bytes <= size_t(INT_MAX), "recv: ", max_bytes, " bytes in one message (at most ",
               INT_MAX, ")");
  const uint64_t ticket = next_ticket_++;
  Transfer& t = recvs_[ticket];
  t.data.resize(max_bytes);
  DSMATH_MPI_CHECK(MPI_Irecv(t.data.data(), int(max_bytes), MPI_BYTE, source, kPointToPointTag,
                             comm_, &t.request));
  return ticket;
}

std::vector<char> MpiCommunicator::wait_recv(uint64_t ticket) {
  CollectiveWatchdog::Watch watch("wait_recv (the last stage's sampled tokens)");
  const auto it = recvs_.find(ticket);
  DSMATH_CHECK(it != recvs_.end(), "wait_recv: no receive ", ticket, " is posted");
  MPI_Status status;
  DSMATH_MPI_CHECK(MPI_Wait(&it->second.request, &status));
  int received = 0;
  DSMATH_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &received));
  std::vector<char> data = std::move(it->second.data);
  recvs_.erase(it);
  data.resize(size_t(received));
  return data;
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  CollectiveWatchdog::Watch watch("broadcast");
  check_root(root, "broadcast");
  auto* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes;) {
    const int n = static_cast<int>(std::min(bytes - done, max_chunk_));
    DSMATH_MPI_CHECK(MPI_Bcast(p + done, n, MPI_BYTE, root, comm_));
    done += n;
  }
}

// MPI's blocking collectives busy-poll: an idle follower would burn a core. Here the root
// sends the message to every rank directly (point-to-point, one hop, so a sleeping rank's
// latency is its own polling interval, not a tree's), and a receiver polls MPI_Test: spinning
// for `spin` (a busy group's next plan comes within milliseconds), then sleeping between polls,
// backing off to 4 ms. An idle follower then costs about 1% of a core (on a VM, mostly the
// wake-ups themselves) and a new plan reaches every rank within about 4 ms.
void MpiCommunicator::await_broadcast(void* data, size_t bytes, int root,
                                      std::chrono::microseconds spin) {
  check_root(root, "await_broadcast");
  DSMATH_CHECK(bytes <= max_chunk_, "await_broadcast: ", bytes, " bytes is more than one piece (",
               max_chunk_, "); use broadcast for bulk data");
  constexpr int kTag = 0x445341;  // "DSA": await_broadcast's messages on this communicator
  if (topology_.rank == root) {
    std::vector<MPI_Request> sends;
    for (int r = 0; r < topology_.world_size; ++r) {
      if (r == root) continue;
      sends.emplace_back();
      DSMATH_MPI_CHECK(MPI_Isend(data, int(bytes), MPI_BYTE, r, kTag, comm_, &sends.back()));
    }
    DSMATH_MPI_CHECK(MPI_Waitall(int(sends.size()), sends.data(), MPI_STATUSES_IGNORE));
    return;
  }
  MPI_Request request;
  DSMATH_MPI_CHECK(MPI_Irecv(data, int(bytes), MPI_BYTE, root, kTag, comm_, &request));
  using Clock = std::chrono::steady_clock;
  const auto spin_until = Clock::now() + spin;
  auto pause = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    DSMATH_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (Clock::now() < spin_until) {
      std::this_thread::yield();  // an oversubscribed core goes to whoever has work
      continue;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(4000));
  }
}

void MpiCommunicator::broadcast_nowait(void* data, size_t bytes, int root) {
  check_root(root, "broadcast_nowait");
  DSMATH_CHECK(bytes <= size_t(INT_MAX), "broadcast_nowait: ", bytes,
               " bytes in one message (at most ", INT_MAX, ")");
  if (topology_.rank != root) {
    CollectiveWatchdog::Watch watch("broadcast_nowait (a step plan)");
    DSMATH_MPI_CHECK(
        MPI_Recv(data, int(bytes), MPI_BYTE, root, kNowaitBroadcastTag, comm_, MPI_STATUS_IGNORE));
    return;
  }
  reap_sends(/*wait_all=*/false);
  const char* begin = static_cast<const char*>(data);
  for (int r = 0; r < topology_.world_size; ++r) {
    if (r == root) continue;
    Transfer& t = sends_.emplace_back();
    t.data.assign(begin, begin + bytes);
    DSMATH_MPI_CHECK(
        MPI_Isend(t.data.data(), int(bytes), MPI_BYTE, r, kNowaitBroadcastTag, comm_, &t.request));
  }
}

void MpiCommunicator::barrier() {
  CollectiveWatchdog::Watch watch("barrier");
  DSMATH_MPI_CHECK(MPI_Barrier(comm_));
}

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm) {
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace dsmath
