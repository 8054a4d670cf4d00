// The MPI backend of Communicator: host memory, any number of ranks, also the control plane.
#pragma once

#include <mpi.h>

#include <climits>
#include <cstddef>
#include <deque>
#include <map>
#include <vector>

#include "worker/comm/communicator.h"

namespace dsmath {

class MpiCommunicator final : public Communicator {
 public:
  // MPI counts are ints, so larger buffers go in pieces of at most max_chunk elements; tests
  // pass a small max_chunk to exercise the piecewise paths without gigabyte buffers.
  static constexpr size_t kMaxChunk = INT_MAX / 4;

  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, size_t max_chunk = kMaxChunk);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  const Topology& topology() const override { return topology_; }
  void all_reduce_sum(float* data, size_t count) override;
  void all_gather(const float* send, size_t count_per_rank, float* recv) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  void send(const float* data, size_t count, int dest) override;
  void recv(float* data, size_t count, int source) override;
  void send_async(std::vector<char> data, int dest) override;
  uint64_t recv_async(size_t max_bytes, int source) override;
  std::vector<char> wait_recv(uint64_t ticket) override;
  void await_broadcast(void* data, size_t bytes, int root, std::chrono::microseconds spin) override;
  void broadcast_nowait(void* data, size_t bytes, int root) override;
  MPI_Comm control_comm() const override { return comm_; }

 private:
  void check_root(int root, const char* what) const;
  static constexpr int kPointToPointTag = 7;
  static constexpr int kNowaitBroadcastTag = 0x44534e;  // "DSN": broadcast_nowait's messages
  struct Transfer {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<char> data;
  };
  void reap_sends(bool wait_all);  // frees the buffers of delivered sends

  std::deque<Transfer> sends_;
  std::map<uint64_t, Transfer> recvs_;
  uint64_t next_ticket_ = 0;

  MPI_Comm comm_ = MPI_COMM_NULL;
  Topology topology_;
  size_t max_chunk_;
};

}  // namespace dsmath
