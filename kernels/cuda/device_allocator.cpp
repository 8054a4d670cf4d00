#include "kernels/cuda/device_allocator.h"

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

DeviceAllocator::DeviceAllocator(int device, cudaStream_t stream) : stream_(stream) {
  DSMATH_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
  uint64_t keep_everything = UINT64_MAX;
  DSMATH_CUDA_CHECK(
      cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_everything));
}

std::shared_ptr<void> DeviceAllocator::allocate(size_t bytes) const {
  void* ptr = nullptr;
  DSMATH_CUDA_CHECK(cudaMallocAsync(&ptr, bytes == 0 ? 1 : bytes, stream_));
  cudaStream_t stream = stream_;
  return std::shared_ptr<void>(ptr, [stream](void* p) { cudaFreeAsync(p, stream); });
}

size_t DeviceAllocator::reserved_bytes() const {
  uint64_t bytes = 0;
  DSMATH_CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemCurrent, &bytes));
  return size_t(bytes);
}

size_t DeviceAllocator::used_bytes() const {
  uint64_t bytes = 0;
  DSMATH_CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrUsedMemCurrent, &bytes));
  return size_t(bytes);
}

}  // namespace dsmath::cuda
