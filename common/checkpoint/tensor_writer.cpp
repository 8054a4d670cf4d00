#include "common/checkpoint/tensor_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/core/error.h"

namespace dsmath {

int64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(what, ": negative dimension ", d);
    if (__builtin_mul_overflow(n, d, &n)) fail(what, ": shape overflows 64 bits");
  }
  return n;
}

int64_t TensorSpec::numel() const {
  return checked_numel(shape, "tensor '" + name + "'");
}

TensorFiller fill_from_buffers(const std::vector<std::vector<std::byte>>& buffers,
                               const std::vector<TensorSpec>& specs) {
  if (buffers.size() != specs.size())
    fail("fill_from_buffers: ", buffers.size(), " buffers for ", specs.size(), " tensors");
  for (size_t i = 0; i < specs.size(); ++i)
    if (buffers[i].size() != specs[i].nbytes())
      fail("fill_from_buffers: tensor '", specs[i].name, "' needs ", specs[i].nbytes(),
           " bytes, buffer has ", buffers[i].size());
  return [&buffers, &specs](size_t index, int64_t first, int64_t count, std::byte* out) {
    size_t es = dtype_size(specs[index].dtype);
    std::memcpy(out, buffers[index].data() + size_t(first) * es, size_t(count) * es);
  };
}

OutFile::OutFile(const std::filesystem::path& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot create ", path.string(), ": ", std::strerror(errno));
}

OutFile::~OutFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("cannot write ", path_.string(), ": ", std::strerror(errno));
    p += w;
    n -= size_t(w);
    pos_ += uint64_t(w);
  }
}

void OutFile::write_at(uint64_t offset, const void* data, size_t n) {
  if (offset + n > pos_) fail("internal: write_at past the end of ", path_.string());
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, off_t(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("cannot write ", path_.string(), ": ", std::strerror(errno));
    p += w;
    n -= size_t(w);
    offset += uint64_t(w);
  }
}

void OutFile::close() {
  if (fd_ < 0) return;
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("cannot close ", path_.string(), ": ", std::strerror(errno));
}

void stream_tensor(OutFile& out, const TensorSpec& spec, size_t index, const TensorFiller& fill,
                   const std::function<void(const std::byte*, size_t)>& observe) {
  constexpr size_t kChunkBytes = size_t(64) << 20;
  const size_t es = dtype_size(spec.dtype);
  const int64_t total = spec.numel();
  const int64_t chunk = int64_t(kChunkBytes / es);
  std::vector<std::byte> buf(size_t(std::min<int64_t>(total, chunk)) * es);
  for (int64_t first = 0; first < total; first += chunk) {
    int64_t count = std::min(chunk, total - first);
    fill(index, first, count, buf.data());
    size_t n = size_t(count) * es;
    if (observe) observe(buf.data(), n);
    out.write(buf.data(), n);
  }
}

}  // namespace dsmath
