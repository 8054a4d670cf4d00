// Fuzz target: the zip reader and the `.bin` checkpoint reader (common/checkpoint/zip.*,
// torch_bin.*). Feeds the input as a whole pytorch_model.bin to read_zip_directory and then
// read_torch_bin (central directory, zip64 records, local headers, data.pkl, storages).
// Checks, besides no crash and no ASan/UBSan report:
//   - a refused file is a dsmath::Error, never another exception type;
//   - every zip entry's data lies inside the file;
//   - every tensor lies inside the file, within its storage entry, and holds numel x dtype
//     bytes.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint/torch_bin.h"
#include "common/checkpoint/zip.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::vector<dsmath::ZipEntry> entries;
  try {
    entries = dsmath::read_zip_directory(bytes, "fuzz.bin");
  } catch (const dsmath::Error&) {
    return 0;
  }
  for (const dsmath::ZipEntry& e : entries)
    FUZZ_CHECK(e.data_offset <= size && e.size <= size - e.data_offset, "zip entry '", e.name,
               "' (", e.size, " bytes at ", e.data_offset, ") lies outside the file of ", size);

  std::vector<dsmath::TensorInfo> tensors;
  try {
    tensors = dsmath::read_torch_bin(bytes, "fuzz.bin");
  } catch (const dsmath::Error&) {
    return 0;
  }
  for (const dsmath::TensorInfo& t : tensors) {
    FUZZ_CHECK(t.data >= bytes.data() && t.data <= bytes.data() + size &&
                   t.nbytes <= size_t(bytes.data() + size - t.data),
               "tensor '", t.name, "' lies outside the file");
    bool in_an_entry = false;
    for (const dsmath::ZipEntry& e : entries)
      in_an_entry |= t.data >= bytes.data() + e.data_offset &&
                     t.data + t.nbytes <= bytes.data() + e.data_offset + e.size;
    FUZZ_CHECK(in_an_entry, "tensor '", t.name, "' lies in no zip entry");
    int64_t numel = 1;
    for (int64_t d : t.shape)
      FUZZ_CHECK(d >= 0 && !__builtin_mul_overflow(numel, d, &numel), "tensor '", t.name,
                 "' has a negative or overflowing shape");
    FUZZ_CHECK(t.nbytes == size_t(numel) * dsmath::dtype_size(t.dtype), "tensor '", t.name,
               "' holds ", t.nbytes, " bytes for ", numel, " elements");
  }
  return 0;
}
