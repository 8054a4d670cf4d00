#include "kernels/cuda/device_allocator.h"

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {
namespace {

size_t size_class(size_t bytes) {
  size_t c = 256;
  while (c < bytes) c *= 2;
  return c;
}

}  // namespace

DeviceAllocator::~DeviceAllocator() {
  for (auto& [size, buffers] : free_)
    for (void* p : buffers) cudaFree(p);
}

std::shared_ptr<void> DeviceAllocator::allocate(size_t bytes) {
  const size_t c = size_class(bytes);
  void* ptr = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(c);
    if (it != free_.end() && !it->second.empty()) {
      ptr = it->second.back();
      it->second.pop_back();
      cached_ -= c;
    }
  }
  if (ptr == nullptr) {
    if (cudaMalloc(&ptr, c) != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error before retrying
      // Out of memory with buffers cached: give them back and try once more.
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& [size, buffers] : free_) {
          for (void* p : buffers) cudaFree(p);
          allocated_ -= size * buffers.size();
          buffers.clear();
        }
        cached_ = 0;
      }
      DSMATH_CUDA_CHECK(cudaMalloc(&ptr, c));
    }
    std::lock_guard<std::mutex> lock(mu_);
    allocated_ += c;
  }
  return std::shared_ptr<void>(ptr, [this, c](void* p) { release(p, c); });
}

void DeviceAllocator::release(void* ptr, size_t c) {
  std::lock_guard<std::mutex> lock(mu_);
  free_[c].push_back(ptr);
  cached_ += c;
}

size_t DeviceAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

size_t DeviceAllocator::allocated_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocated_;
}

}  // namespace dsmath::cuda
