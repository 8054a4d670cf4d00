// Fuzz target: the restricted unpickler of `.bin` checkpoints (common/checkpoint/pickle.*).
// Feeds the input as a data.pkl to unpickle_state_dict.
// Checks, besides no crash and no ASan/UBSan report:
//   - a refused pickle is a dsmath::Error, never another exception type (in particular any
//     global outside the tensor-rebuild allow-list is refused, and nothing is ever called);
//   - an accepted state dict has no negative storage size, and survives a round trip through
//     the project's own writer: unpickle(pickle_state_dict(tensors)) == tensors.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint/pickle.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

bool same(const dsmath::PickledTensor& a, const dsmath::PickledTensor& b) {
  return a.name == b.name && a.dtype == b.dtype && a.storage_key == b.storage_key &&
         a.storage_numel == b.storage_numel && a.storage_offset == b.storage_offset &&
         a.shape == b.shape && a.stride == b.stride;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::vector<dsmath::PickledTensor> tensors;
  try {
    tensors = dsmath::unpickle_state_dict(bytes, "fuzz.bin");
  } catch (const dsmath::Error&) {
    return 0;
  }
  for (const dsmath::PickledTensor& t : tensors)
    FUZZ_CHECK(t.storage_numel >= 0, "tensor '", t.name, "' has storage size ", t.storage_numel);
  const std::string again = dsmath::pickle_state_dict(tensors);
  const std::vector<dsmath::PickledTensor> back = dsmath::unpickle_state_dict(
      std::span(reinterpret_cast<const std::byte*>(again.data()), again.size()), "rewritten.bin");
  FUZZ_CHECK(back.size() == tensors.size(), "the rewritten pickle holds ", back.size(),
             " tensors instead of ", tensors.size());
  for (size_t i = 0; i < back.size(); ++i)
    FUZZ_CHECK(same(back[i], tensors[i]), "tensor '", tensors[i].name, "' changed when rewritten");
  return 0;
}
