// A caching allocator for device memory: a freed buffer goes back to a free list of its size
// class (powers of two from 256 B) instead of to cudaFree, so a step loop whose tensors change
// size from step to step stops calling cudaMalloc (which synchronizes the device) once warm.
// Every buffer is used on one stream, so a buffer freed by the host may be handed out again at
// once: work queued on it earlier runs before work queued by its next owner (stream order).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace dsmath::cuda {

class DeviceAllocator {
 public:
  DeviceAllocator() = default;
  ~DeviceAllocator();  // frees the cached buffers; buffers still held are freed by their owners
  DeviceAllocator(const DeviceAllocator&) = delete;
  DeviceAllocator& operator=(const DeviceAllocator&) = delete;

  // At least `bytes` of device memory; returned to the cache when the last owner lets go. The
  // allocator must outlive the buffers it hands out.
  std::shared_ptr<void> allocate(size_t bytes);

  size_t cached_bytes() const;
  size_t allocated_bytes() const;  // held by owners and cached, together

 private:
  void release(void* ptr, size_t size_class);

  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> free buffers
  size_t cached_ = 0, allocated_ = 0;
};

}  // namespace dsmath::cuda
