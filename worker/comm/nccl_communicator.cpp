#include "worker/comm/nccl_communicator.h"

#include <cstdint>
#include <thread>

#include "worker/comm/collective_error.h"
#include "worker/comm/collective_watchdog.h"
#include "worker/comm/cuda_check.h"

namespace dsmath {

NcclCommunicator::NcclCommunicator(MPI_Comm comm, int device) : device_(device) {
  try {
    DSMATH_MPI_CHECK(MPI_Comm_dup(comm, &mpi_comm_));
    DSMATH_MPI_CHECK(MPI_Comm_set_errhandler(mpi_comm_, MPI_ERRORS_RETURN));
    topology_ = Topology::from_mpi(mpi_comm_);

    ncclUniqueId id{};
    collectively(mpi_comm_, [&] {
      DSMATH_CHECK(device >= 0, "NCCL communicator: device ", device, " is negative");
      DSMATH_CUDA_CHECK(cudaSetDevice(device));
      DSMATH_CUDA_CHECK(cudaStreamCreateWithFlags(&own_stream_, cudaStreamDefault));
      stream_ = own_stream_;
      if (topology_.rank == 0) DSMATH_NCCL_CHECK(ncclGetUniqueId(&id));
    });
    DSMATH_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_comm_));
    // Every rank reached this point, so a failing init (say, two ranks on one GPU) is reported
    // by NCCL on all of them rather than leaving some waiting.
    collectively(mpi_comm_, [&] {
      DSMATH_NCCL_CHECK(ncclCommInitRank(&nccl_, topology_.world_size, id, topology_.rank));
    });
  } catch (...) {
    release();
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  release();
}

void NcclCommunicator::release() noexcept {
  if (nccl_ != nullptr) {
    // Destroy waits for queued work, which never completes after an error; abort does not wait.
    if (aborted_) {
      ncclCommAbort(nccl_);
    } else {
      if (stream_ != nullptr) cudaStreamSynchronize(stream_);
      ncclCommDestroy(nccl_);
    }
    nccl_ = nullptr;
  }
  if (own_stream_ != nullptr) cudaStreamDestroy(own_stream_);
  own_stream_ = stream_ = nullptr;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && mpi_comm_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_comm_);
}

void NcclCommunicator::set_stream(cudaStream_t stream, bool host_waits) {
  check_usable("set_stream");
  wait("set_stream");  // nothing of ours may still run on the old stream
  stream_ = stream != nullptr ? stream : own_stream_;
  host_waits_ = host_waits;
}

void NcclCommunicator::complete() {
  check_usable("complete");
  wait("collectives of this step");
}

void NcclCommunicator::check_usable(const char* what) const {
  DSMATH_CHECK(!aborted_, "NCCL ", what, ": the communicator was aborted after an earlier error");
}

void NcclCommunicator::check_root(int root, const char* what) const {
  DSMATH_CHECK(root >= 0 && root < topology_.world_size, "NCCL ", what, ": root ", root,
               " is outside a group of ", topology_.world_size, " ranks");
}

void NcclCommunicator::wait(const char* what) {
  CollectiveWatchdog::Watch watch("NCCL work on the stream (collectives, stage sends)");
  for (;;) {
    const cudaError_t state = cudaStreamQuery(stream_);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) {
      ncclCommAbort(nccl_);
      nccl_ = nullptr;
      aborted_ = true;
      fail("NCCL ", what, " on ", topology_.describe(), " device ", device_,
           ": CUDA error while waiting: ", cudaGetErrorName(state), ": ",
           cudaGetErrorString(state));
    }
    ncclResult_t async = ncclSuccess;
    const ncclResult_t rc = ncclCommGetAsyncError(nccl_, &async);
    if (rc != ncclSuccess || (async != ncclSuccess && async != ncclInProgress)) {
      const ncclResult_t bad = rc != ncclSuccess ? rc : async;
      const std::string detail = detail::nccl_error_text(bad, ncclGetLastError(nccl_));
      ncclCommAbort(nccl_);
      nccl_ = nullptr;
      aborted_ = true;
      fail("NCCL ", what, " on ", topology_.describe(), " device ", device_, ": ", detail);
    }
    std::this_thread::yield();
  }
}

void NcclCommunicator::all_reduce_sum(float* data, size_t count) {
  check_usable("all_reduce_sum");
  if (count == 0) return;
  DSMATH_NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, nccl_, stream_));
  if (host_waits_) wait("all_reduce_sum");
}

void NcclCommunicator::all_gather(const float* send, size_t count_per_rank, float* recv) {
  check_usable("all_gather");
  if (count_per_rank == 0) return;
  // NCCL treats send == recv + rank * count as in place, the same contract as the MPI backend.
  DSMATH_NCCL_CHECK(ncclAllGather(send, recv, count_per_rank, ncclFloat32, nccl_, stream_));
  if (host_waits_) wait("all_gather");
}

void NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
  check_usable("broadcast");
  check_root(root, "broadcast");
  if (bytes == 0) return;
  DSMATH_NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, nccl_, stream_));
  wait("broadcast");
}

void NcclCommunicator::send(const float* data, size_t count, int dest) {
  check_usable("send");
  check_root(dest, "send");
  DSMATH_CHECK(dest != topology_.rank, "send: rank ", dest, " is this rank");
  if (count == 0) return;
  DSMATH_NCCL_CHECK(ncclSend(data, count, ncclFloat32, dest, nccl_, stream_));
  if (host_waits_) wait("send");
}

void NcclCommunicator::recv(float* data, size_t count, int source) {
  check_usable("recv");
  check_root(source, "recv");
  DSMATH_CHECK(source != topology_.rank, "recv: rank ", source, " is this rank");
  if (count == 0) return;
  DSMATH_NCCL_CHECK(ncclRecv(data, count, ncclFloat32, source, nccl_, stream_));
  if (host_waits_) wait("recv");
}

void NcclCommunicator::barrier() {
  check_usable("barrier");
  wait("barrier");  // our own queued work is part of what the barrier orders
  DSMATH_MPI_CHECK(MPI_Barrier(mpi_comm_));
}

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, int device) {
  return std::make_unique<NcclCommunicator>(comm, device);
}

}  // namespace dsmath
