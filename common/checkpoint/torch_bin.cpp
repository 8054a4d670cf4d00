#include "common/checkpoint/torch_bin.h"

#include <map>

#include "common/checkpoint/pickle.h"
#include "common/checkpoint/tensor_writer.h"
#include "common/checkpoint/zip.h"
#include "common/core/error.h"

namespace dsmath {

std::vector<TensorInfo> read_torch_bin(const MappedFile& file) {
  return read_torch_bin(file.bytes(), file.path());
}

std::vector<TensorInfo> read_torch_bin(std::span<const std::byte> bytes,
                                       const std::filesystem::path& file) {
  const std::string fname = file.string();
  // Before 1.6, torch.save wrote a bare pickle stream; it cannot be mapped in place.
  if (bytes.size() >= 2 && bytes[0] == std::byte{0x80} && bytes[1] == std::byte{0x02})
    fail(fname, ": legacy (pre-zip) torch.save format; re-save it with torch >= 1.6");

  std::map<std::string, ZipEntry> entries;
  for (ZipEntry& e : read_zip_directory(bytes, file)) entries.emplace(e.name, std::move(e));
  const ZipEntry* pkl = nullptr;
  std::string prefix;
  for (const auto& [name, e] : entries) {
    size_t slash = name.find('/');
    if (slash != std::string::npos && name.substr(slash) == "/data.pkl") {
      if (pkl) fail(fname, ": more than one data.pkl in the archive");
      pkl = &e;
      prefix = name.substr(0, slash + 1);
    }
  }
  if (!pkl) fail(fname, ": zip archive has no <archive>/data.pkl; not a torch.save checkpoint");

  const std::vector<PickledTensor> pickled =
      unpickle_state_dict(bytes.subspan(pkl->data_offset, pkl->size), fname);
  std::vector<TensorInfo> out;
  for (const PickledTensor& p : pickled) {
    const std::string where = fname + ": tensor '" + p.name + "'";
    const size_t es = dtype_size(p.dtype);
    auto it = entries.find(prefix + "data/" + p.storage_key);
    if (it == entries.end())
      fail(where, ": its storage entry ", prefix, "data/", p.storage_key, " is missing");
    const ZipEntry& storage = it->second;
    uint64_t storage_bytes = 0;
    if (__builtin_mul_overflow(uint64_t(p.storage_numel), es, &storage_bytes) ||
        storage_bytes != storage.size)
      fail(where, ": storage ", p.storage_key, " should hold ", p.storage_numel, " x ",
           dtype_name(p.dtype), " but its entry has ", storage.size, " bytes");
    if (p.stride.size() != p.shape.size())
      fail(where, ": ", p.shape.size(), " dims but ", p.stride.size(), " strides");
    const int64_t numel = checked_numel(p.shape, where);
    // Row-major contiguity; dims of size 1 may carry any stride, as in torch. With a zero dim
    // the product of the dims after it is not bounded by numel, so it is checked too.
    int64_t expected = 1;
    for (size_t d = p.shape.size(); d-- > 0;) {
      if (p.shape[d] != 1 && p.stride[d] != expected)
        fail(where, ": strides are not contiguous (dim ", d, " has stride ", p.stride[d],
             ", expected ", expected, "); save it with .contiguous()");
      if (__builtin_mul_overflow(expected, p.shape[d], &expected))
        fail(where, ": dims ", d, " onwards hold more than 2^63 elements (strides overflow)");
    }
    if (p.storage_offset < 0 || p.storage_offset > p.storage_numel ||
        numel > p.storage_numel - p.storage_offset)
      fail(where, ": storage_offset ", p.storage_offset, " + ", numel,
           " elements runs past its storage of ", p.storage_numel);
    TensorInfo t;
    t.name = p.name;
    t.dtype = p.dtype;
    t.shape = p.shape;
    t.data = bytes.data() + storage.data_offset + size_t(p.storage_offset) * es;
    t.nbytes = size_t(numel) * es;
    t.file = file;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace dsmath
