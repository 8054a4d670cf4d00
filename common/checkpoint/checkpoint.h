// A checkpoint directory exactly as downloaded from the hub: config.json,
// generation_config.json, and weights in one of
//   model.safetensors
//   model.safetensors.index.json  -> shards named by its weight_map
//   pytorch_model.bin.index.json  -> PyTorch zip shards named by its weight_map
//   pytorch_model.bin
// Every weight file is memory-mapped; a TensorInfo points into the map (no copy).
// All structural checks (offsets inside the file, dtype known, byte count = shape x dtype)
// happen when the checkpoint is opened, so later reads never go out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/core/dtype.h"
#include "common/core/mapped_file.h"

namespace dsmath {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // contiguous, row-major, inside a MappedFile
  size_t nbytes = 0;
  std::filesystem::path file;  // the file it lives in, for error messages

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class Checkpoint {
 public:
  // Reads config.json, generation_config.json and the weight index; maps every weight file.
  static Checkpoint open(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const GenerationConfig& generation_config() const { return generation_config_; }
  // "safetensors", "safetensors-sharded", "bin", "bin-sharded"
  const std::string& format() const { return format_; }

  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  // Throws Error naming the checkpoint directory and the tensor when absent.
  const TensorInfo& tensor(const std::string& name) const;
  // Also checks the shape; the error names tensor, file, expected and actual shape.
  const TensorInfo& tensor(const std::string& name, const std::vector<int64_t>& shape) const;
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  // Sum of nbytes over all tensors.
  size_t weight_bytes() const;

 private:
  std::filesystem::path dir_;
  ModelConfig config_;
  GenerationConfig generation_config_;
  std::string format_;
  std::vector<std::shared_ptr<MappedFile>> files_;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace dsmath
