// Device buffers for activations and scratch, from CUDA's stream-ordered allocator
// (cudaMallocAsync on the device's default memory pool): a freed buffer returns to the pool in
// stream order and the next allocation of the step reuses it without a cudaMalloc (which would
// synchronize the device). The pool keeps what it has reserved (release threshold: never), so
// a warm step loop allocates nothing from the driver. CUDA's own pool rather than one of ours:
// it already does caching, stream ordering and defragmentation.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

namespace dsmath::cuda {

class DeviceAllocator {
 public:
  // Buffers are allocated and freed in the order of `stream`, which must outlive them.
  DeviceAllocator(int device, cudaStream_t stream);

  // At least `bytes` of device memory, usable on the stream once the call returns (in stream
  // order); returned to the pool when the last owner lets go.
  std::shared_ptr<void> allocate(size_t bytes) const;

  size_t reserved_bytes() const;  // what the pool holds from the driver
  size_t used_bytes() const;      // of that, what buffers hold now

 private:
  cudaStream_t stream_;
  cudaMemPool_t pool_ = nullptr;
};

}  // namespace dsmath::cuda
