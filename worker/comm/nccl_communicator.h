// The NCCL backend of Communicator: device memory, one GPU per rank. The NCCL communicator is
// bootstrapped by broadcasting an ncclUniqueId from rank 0 over MPI, and keeps that MPI
// communicator as its control plane (collectively(), barrier).
//
// Each collective is enqueued on stream(). By default the host then waits for it, polling NCCL
// for asynchronous errors so that a dead peer becomes an exception (and an aborted
// communicator) rather than a hang. A backend computing on its own stream sets it in
// stream-ordered mode: collectives are only enqueued, in order with its kernels, and
// complete() does the waiting and polling once per step. Built only when DSMATH_HAVE_NCCL.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include "worker/comm/communicator.h"

namespace dsmath {

class NcclCommunicator final : public Communicator {
 public:
  // Makes `device` current on this thread and joins the NCCL group of `comm`'s ranks. Errors
  // before the NCCL join (bad device, no GPU) reach every rank through collectively().
  NcclCommunicator(MPI_Comm comm, int device);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  const Topology& topology() const override { return topology_; }
  void all_reduce_sum(float* data, size_t count) override;
  void all_gather(const float* send, size_t count_per_rank, float* recv) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void barrier() override;
  // Point to point (pipeline stages' activations), on the stream like the collectives.
  void send(const float* data, size_t count, int dest) override;
  void recv(float* data, size_t count, int source) override;
  bool device_memory() const override { return true; }
  void complete() override;
  MPI_Comm control_comm() const override { return mpi_comm_; }

  int device() const { return device_; }
  // Collectives run on this stream: by default one of our own, created blocking so that it
  // follows work on the legacy default stream. A backend that computes on its own stream sets
  // it here so collectives see its results in stream order; with `host_waits` false the
  // collectives are only enqueued and complete() waits for them.
  cudaStream_t stream() const { return stream_; }
  void set_stream(cudaStream_t stream, bool host_waits = true);

 private:
  void release() noexcept;
  void check_usable(const char* what) const;
  void check_root(int root, const char* what) const;
  // Waits for the stream; on an NCCL or CUDA error aborts the communicator and throws.
  void wait(const char* what);

  MPI_Comm mpi_comm_ = MPI_COMM_NULL;
  Topology topology_;
  int device_ = -1;
  ncclComm_t nccl_ = nullptr;
  cudaStream_t own_stream_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool aborted_ = false;
  bool host_waits_ = true;
};

}  // namespace dsmath
