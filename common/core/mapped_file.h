// A read-only memory map of a whole file. Checkpoint tensors point straight into it, so
// weights are never copied into process memory: pages are faulted in on first use and
// each rank of a tensor-parallel group touches only the slices it owns.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>

namespace dsmath {

class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws Error naming the file
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dsmath
