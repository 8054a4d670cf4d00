// Writes a PyTorch zip checkpoint that torch.load (and transformers' from_pretrained, which
// loads with weights_only=True) reads: each tensor in its own storage "0", "1", ..., entry
// data 64-byte aligned, the archive folder named after the file stem, as torch.save does.
#pragma once

#include <filesystem>
#include <vector>

#include "common/checkpoint/tensor_writer.h"

namespace dsmath {

void write_torch_bin(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                     const TensorFiller& fill, bool force_zip64 = false);

}  // namespace dsmath
