// Shared pieces of the checkpoint writers: what a tensor to write looks like, how its bytes
// are produced (a callback, so a 13.8 GB model streams to disk chunk by chunk without ever
// being whole in RAM), and an output file whose errors name the path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/core/dtype.h"

namespace dsmath {

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  int64_t numel() const;  // throws Error on negative dims or overflow
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
};

// Writes elements [first, first + count) of tensor `index` (position in the list given to a
// writer), encoded in that tensor's dtype, to `out`.
using TensorFiller =
    std::function<void(size_t index, int64_t first, int64_t count, std::byte* out)>;

// A filler copying from caller-owned byte buffers, one per tensor (tests use it).
TensorFiller fill_from_buffers(const std::vector<std::vector<std::byte>>& buffers,
                               const std::vector<TensorSpec>& specs);

// Product of dims, as int64, failing (naming `what`) on a negative dim or overflow.
int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what);

class OutFile {
 public:
  explicit OutFile(const std::filesystem::path& path);  // creates or truncates
  ~OutFile();
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* data, size_t n);
  // Overwrites bytes already written (zip headers patched once a CRC is known).
  void write_at(uint64_t offset, const void* data, size_t n);
  uint64_t pos() const { return pos_; }
  void close();  // flushes; a failure here is an error too
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  uint64_t pos_ = 0;
};

// Streams one tensor through `fill` into `out`, in chunks of at most 64 MiB; `observe`, when
// set, sees every chunk after it is produced (the zip writer computes its CRC this way).
void stream_tensor(OutFile& out, const TensorSpec& spec, size_t index, const TensorFiller& fill,
                   const std::function<void(const std::byte*, size_t)>& observe = {});

}  // namespace dsmath
