// Writes a safetensors file the way the Python `safetensors` library does: header padded
// with spaces to a multiple of 8 bytes, "__metadata__": {"format": "pt"} (transformers
// refuses files without it), tensors laid out in the given order.
#pragma once

#include <filesystem>
#include <vector>

#include "common/checkpoint/tensor_writer.h"

namespace dsmath {

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorSpec>& tensors,
                       const TensorFiller& fill);

}  // namespace dsmath
