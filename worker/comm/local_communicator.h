// A group of one process that never touches MPI: every collective is the identity. For the
// engine and model driven in-process (tests, tools, a single-process server) where no
// MpiSession exists.
#pragma once

#include <cstring>
#include <memory>

#include "worker/comm/communicator.h"

namespace dsmath {

class LocalCommunicator final : public Communicator {
 public:
  const Topology& topology() const override { return topology_; }
  void all_reduce_sum(float*, size_t) override {}
  void all_gather(const float* send, size_t count, float* recv) override {
    if (send != recv) std::memmove(recv, send, count * sizeof(float));
  }
  void broadcast(void*, size_t, int root) override { check_root(root); }
  void barrier() override {}

 private:
  static void check_root(int root) {
    DSMATH_CHECK(root == 0, "broadcast: root ", root, " is outside a group of 1 rank");
  }
  Topology topology_ = Topology::tensor_parallel(1, 0);
};

inline std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace dsmath
