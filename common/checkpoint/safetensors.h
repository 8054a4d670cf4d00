// safetensors: an 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data; offsets are relative to the end of the header.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/core/mapped_file.h"

namespace dsmath {

// Validates the header against the mapped file (dtype known, shape x dtype = byte count,
// offsets inside the data, no overlaps) and returns tensors pointing into the map.
std::vector<TensorInfo> read_safetensors(const MappedFile& file);
// The same on bytes already in memory; `file` names them in errors and in TensorInfo::file.
// The tensors point into `bytes`.
std::vector<TensorInfo> read_safetensors(std::span<const std::byte> bytes,
                                         const std::filesystem::path& file);

}  // namespace dsmath
