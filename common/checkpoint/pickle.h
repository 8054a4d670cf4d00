// The pickle in a torch.save zip (data.pkl): a dict of tensor name -> tensor, each tensor
//   torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
//                                   backward_hooks)
// where storage is a persistent id ('storage', torch.BFloat16Storage, key, location, numel)
// naming the zip entry <archive>/data/<key>.
//
// The reader is a small stack machine for the opcodes torch emits (protocol 2, plus the few
// protocol 3/4 ones other writers add). It accepts only the tensor-rebuild globals and never
// calls anything: "calling" an allowed global builds a plain description, so a malicious
// pickle can at worst produce an error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/core/dtype.h"

namespace dsmath {

struct PickledTensor {
  std::string name;
  DType dtype = DType::F32;
  std::string storage_key;    // entry <archive>/data/<storage_key>
  int64_t storage_numel = 0;  // elements of the storage (not of the tensor)
  int64_t storage_offset = 0;
  std::vector<int64_t> shape, stride;
};

// `file` names the checkpoint in errors.
std::vector<PickledTensor> unpickle_state_dict(std::span<const std::byte> pkl,
                                               const std::string& file);

// The same pickle torch.save writes for a dict of tensors (memo-free, so storages shared by
// several tensors are simply named again by key; torch.load caches them by key).
std::string pickle_state_dict(const std::vector<PickledTensor>& tensors);

}  // namespace dsmath
