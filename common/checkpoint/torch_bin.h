// PyTorch checkpoints as torch.save (>= 1.6) writes them: a zip archive holding
//   <archive>/data.pkl      the state dict pickle (see pickle.h)
//   <archive>/data/<key>    raw little-endian bytes of each storage
//   <archive>/version
// where <archive> is any single top-level folder name (torch uses the file's stem).
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/core/mapped_file.h"

namespace dsmath {

// Tensors point into the mapping at their storage's entry plus storage_offset. Checked at
// open: storage entry present with exactly numel x dtype bytes, tensor inside its storage,
// strides contiguous (row-major). Several tensors may share one storage (tied weights).
std::vector<TensorInfo> read_torch_bin(const MappedFile& file);
// The same on bytes already in memory; `file` names them in errors and in TensorInfo::file.
// The tensors point into `bytes`.
std::vector<TensorInfo> read_torch_bin(std::span<const std::byte> bytes,
                                       const std::filesystem::path& file);

}  // namespace dsmath
