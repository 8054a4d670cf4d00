// Communicator: collectives over the ranks of one group. The MPI backend works on host memory
// and is also the control plane (step plans, errors); the NCCL backend works on device memory.
// Every call is collective: all ranks of the group make the same calls in the same order with
// the same counts, and a call returns once this rank's result is in place.
#pragma once

#include <mpi.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "worker/comm/topology.h"

namespace dsmath {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const Topology& topology() const = 0;

  // data[i] = sum over ranks of data[i], in place. Every rank gets the same bits.
  virtual void all_reduce_sum(float* data, size_t count) = 0;

  // recv = send of rank 0 | send of rank 1 | ... (count_per_rank floats each). send may point
  // at this rank's own slot of recv.
  virtual void all_gather(const float* send, size_t count_per_rank, float* recv) = 0;

  // Copies `bytes` bytes at data on `root` to data on every other rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;

  virtual void barrier() = 0;

  // Point to point, for activations between pipeline stages: `count` floats to / from one rank
  // of this communicator. Unlike the calls above, only the two ranks take part.
  virtual void send(const float* data, size_t count, int dest);
  virtual void recv(float* data, size_t count, int source);
  // Non-blocking messages of bytes, for pipelined micro-batches (the last stage's results to
  // the driver): send_async keeps `data` until it is delivered (later calls and the destructor
  // complete it); recv_async posts a receive of at most `max_bytes` now, and wait_recv returns
  // what arrived. Receives from one source match its sends in order.
  virtual void send_async(std::vector<char> data, int dest);
  virtual uint64_t recv_async(size_t max_bytes, int source);
  virtual std::vector<char> wait_recv(uint64_t ticket);

  // True when the collectives take device pointers (NCCL), false for host memory (MPI).
  virtual bool device_memory() const { return false; }

  // Returns once every collective this rank started has finished, throwing if one failed. A
  // host communicator finishes each call before it returns; a device one may only enqueue
  // them on a stream (see NcclCommunicator::set_stream) and is waited for here.
  virtual void complete() {}

  // A broadcast that receivers may wait on for a long time (an idle group's next step plan):
  // a waiting rank polls, spinning for `spin` and then sleeping between polls (backing off to
  // 4 ms), so an idle rank does not burn a core yet wakes within a few milliseconds.
  // Every rank must call await_broadcast for the same message (it does not match
  // broadcast()). Default: broadcast().
  virtual void await_broadcast(void* data, size_t bytes, int root,
                               std::chrono::microseconds spin = std::chrono::microseconds(200)) {
    broadcast(data, bytes, root);
  }
  // A broadcast whose root does not wait for delivery: it keeps a copy of `data` and returns at
  // once (later calls on this communicator and its destructor complete the sends), so the driver
  // can hand a step plan to pipeline stages still busy with the previous micro-batch. Receivers
  // return once the data is in place. Every rank must call broadcast_nowait for the same message.
  virtual void broadcast_nowait(void* data, size_t bytes, int root) {
    broadcast(data, bytes, root);
  }

  // The MPI communicator that carries this group's control traffic (collectively(), the NCCL
  // bootstrap); MPI_COMM_NULL for a group that is one process without MPI.
  virtual MPI_Comm control_comm() const { return MPI_COMM_NULL; }
};

inline void Communicator::send(const float*, size_t, int dest) {
  fail("send to rank ", dest, ": this communicator has no point-to-point messages");
}
inline void Communicator::recv(float*, size_t, int source) {
  fail("recv from rank ", source, ": this communicator has no point-to-point messages");
}
inline void Communicator::send_async(std::vector<char>, int dest) {
  fail("send to rank ", dest, ": this communicator has no point-to-point messages");
}
inline uint64_t Communicator::recv_async(size_t, int source) {
  fail("recv from rank ", source, ": this communicator has no point-to-point messages");
}
inline std::vector<char> Communicator::wait_recv(uint64_t) {
  fail("wait_recv: this communicator has no point-to-point messages");
}

// A communicator over the ranks of `comm` (duplicated, so its traffic never matches the
// caller's own messages). Errors come back as dsmath::Error instead of aborting the job.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm = MPI_COMM_WORLD);

#if DSMATH_HAVE_NCCL
// A communicator over the ranks of `comm` on GPU `device` (device pointers); see
// nccl_communicator.h. Bad devices or a missing GPU throw on every rank.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, int device);
#endif

// Broadcast helpers for host-side values: use them on the MPI (control-plane) communicator.
// Sizes travel first, so receivers need not know them.

template <typename T>
void broadcast_value(Communicator& comm, T& value, int root) {
  static_assert(std::is_trivially_copyable_v<T>, "broadcast_value needs a trivially copyable T");
  comm.broadcast(&value, sizeof(T), root);
}

template <typename T>
void broadcast_vector(Communicator& comm, std::vector<T>& values, int root) {
  static_assert(std::is_trivially_copyable_v<T>, "broadcast_vector needs a trivially copyable T");
  uint64_t size = values.size();
  broadcast_value(comm, size, root);
  values.resize(size);
  if (size != 0) comm.broadcast(values.data(), size * sizeof(T), root);
}

inline void broadcast_string(Communicator& comm, std::string& text, int root) {
  uint64_t size = text.size();
  broadcast_value(comm, size, root);
  text.resize(size);
  if (size != 0) comm.broadcast(text.data(), size, root);
}

}  // namespace dsmath
