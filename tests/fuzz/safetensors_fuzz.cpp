// Fuzz target: the safetensors header parser (common/checkpoint/safetensors.*).
// Feeds the input as a whole .safetensors file to read_safetensors(bytes, name).
// Checks, besides no crash and no ASan/UBSan report:
//   - a refused file is a dsmath::Error, never another exception type;
//   - an accepted file's tensors lie wholly inside the data section (after the 8-byte length
//     and the header), hold exactly numel x dtype bytes, and never overlap one another.
// Half the mutations change the header as a JSON tree (json_mutator.h) and fix its length.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "common/checkpoint/safetensors.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_mutator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::vector<dsmath::TensorInfo> tensors;
  try {
    tensors = dsmath::read_safetensors(bytes, "fuzz.safetensors");
  } catch (const dsmath::Error&) {
    return 0;
  }
  FUZZ_CHECK(size >= 8, "accepted a file of ", size, " bytes");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | data[i];
  FUZZ_CHECK(header_len <= size - 8, "accepted a header of ", header_len, " bytes");
  const std::byte* begin = bytes.data() + 8 + header_len;
  const std::byte* end = bytes.data() + size;
  std::vector<std::pair<const std::byte*, const std::byte*>> ranges;
  for (const dsmath::TensorInfo& t : tensors) {
    FUZZ_CHECK(t.data >= begin && t.data <= end && t.nbytes <= size_t(end - t.data), "tensor '",
               t.name, "' lies outside the data section");
    int64_t numel = 1;
    for (int64_t d : t.shape)
      FUZZ_CHECK(d >= 0 && !__builtin_mul_overflow(numel, d, &numel), "tensor '", t.name,
                 "' has a negative or overflowing shape");
    FUZZ_CHECK(t.nbytes == size_t(numel) * dsmath::dtype_size(t.dtype), "tensor '", t.name,
               "' holds ", t.nbytes, " bytes for ", numel, " elements");
    if (t.nbytes > 0) ranges.emplace_back(t.data, t.data + t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  const std::byte* reached = begin;  // the furthest end among the tensors before
  for (const auto& [first, last] : ranges) {
    FUZZ_CHECK(first >= reached, "two tensors overlap");
    reached = last;
  }
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned seed) {
  dsmath::fuzz::JsonMutator m(seed);
  uint64_t header_len = 0;
  for (int i = 7; size >= 8 && i >= 0; --i) header_len = header_len << 8 | data[i];
  if (size >= 8 && header_len <= size - 8 && m.below(2) == 0) {
    std::string header(reinterpret_cast<const char*>(data) + 8, header_len);
    if (m.mutate_text(header)) {
      std::string out(8, '\0');
      for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
      out += header;
      out.append(reinterpret_cast<const char*>(data) + 8 + header_len, size - 8 - header_len);
      if (const size_t n = dsmath::fuzz::put(out, data, max_size)) return n;
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}
