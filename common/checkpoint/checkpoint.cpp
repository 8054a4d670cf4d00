#include "common/checkpoint/checkpoint.h"

#include <set>

#include "common/checkpoint/safetensors.h"
#include "common/checkpoint/torch_bin.h"
#include "common/core/error.h"
#include "common/core/json_file.h"

namespace dsmath {
namespace {

namespace fs = std::filesystem;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// weight_map of an index file: tensor name -> shard file name (a plain name inside `dir`).
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  const Json j = read_json_file(index);
  if (!j.is_object() || !j.contains("weight_map") || !j.at("weight_map").is_object())
    fail(index.string(), ": missing 'weight_map' object");
  std::map<std::string, std::string> map;
  for (const auto& [name, shard] : j.at("weight_map").items()) {
    if (!shard.is_string())
      fail(index.string(), ": weight_map entry for tensor '", name, "' is not a file name");
    std::string s = shard.get<std::string>();
    // Shards live next to the index; a path could point anywhere on the machine.
    if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..")
      fail(index.string(), ": weight_map entry for tensor '", name, "' names '", s,
           "', which is not a plain file name in the checkpoint directory");
    map.emplace(name, std::move(s));
  }
  if (map.empty()) fail(index.string(), ": weight_map is empty");
  return map;
}

}  // namespace

Checkpoint Checkpoint::open(const fs::path& dir) {
  Checkpoint ck;
  ck.dir_ = dir;
  if (!fs::is_directory(dir)) fail("checkpoint directory ", dir.string(), " does not exist");
  const fs::path config = dir / "config.json";
  if (!fs::exists(config)) fail(config.string(), " is missing");
  ck.config_ = ModelConfig::load(config);
  ck.generation_config_ = GenerationConfig::load(dir / "generation_config.json", ck.config_);

  // Reads one weight file and registers its tensors; `expected` (sharded formats) maps the
  // tensor names the index assigns to this file.
  auto add_file = [&](const fs::path& file, const std::set<std::string>* expected) {
    if (!fs::exists(file)) fail("weight file ", file.string(), " is missing");
    auto mapped = std::make_shared<MappedFile>(file);
    std::vector<TensorInfo> tensors =
        file.extension() == ".bin" ? read_torch_bin(*mapped) : read_safetensors(*mapped);
    std::set<std::string> found;
    for (TensorInfo& t : tensors) {
      found.insert(t.name);
      auto [it, fresh] = ck.tensors_.emplace(t.name, t);
      if (!fresh)
        fail("tensor '", t.name, "' appears in both ", it->second.file.string(), " and ",
             file.string());
    }
    if (expected)
      for (const std::string& name : *expected)
        if (!found.count(name))
          fail(file.string(), ": tensor '", name,
               "' is listed for this shard in the index but is not in the file");
    ck.files_.push_back(std::move(mapped));
  };

  auto add_sharded = [&](const fs::path& index) {
    std::map<std::string, std::set<std::string>> by_shard;
    for (const auto& [name, shard] : read_weight_map(index)) by_shard[shard].insert(name);
    for (const auto& [shard, names] : by_shard) {
      if (!fs::exists(dir / shard))
        fail(index.string(), " names shard ", shard, " but ", (dir / shard).string(),
             " is missing");
      add_file(dir / shard, &names);
    }
  };

  if (fs::exists(dir / "model.safetensors.index.json")) {
    ck.format_ = "safetensors-sharded";
    add_sharded(dir / "model.safetensors.index.json");
  } else if (fs::exists(dir / "model.safetensors")) {
    ck.format_ = "safetensors";
    add_file(dir / "model.safetensors", nullptr);
  } else if (fs::exists(dir / "pytorch_model.bin.index.json")) {
    ck.format_ = "bin-sharded";
    add_sharded(dir / "pytorch_model.bin.index.json");
  } else if (fs::exists(dir / "pytorch_model.bin")) {
    ck.format_ = "bin";
    add_file(dir / "pytorch_model.bin", nullptr);
  } else {
    fail(dir.string(),
         ": no weights found (expected model.safetensors, "
         "model.safetensors.index.json, pytorch_model.bin.index.json or pytorch_model.bin)");
  }
  return ck;
}

const TensorInfo& Checkpoint::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    fail("checkpoint ", dir_.string(), ": tensor '", name, "' is missing (", tensors_.size(),
         " tensors present)");
  return it->second;
}

const TensorInfo& Checkpoint::tensor(const std::string& name,
                                     const std::vector<int64_t>& shape) const {
  const TensorInfo& t = tensor(name);
  if (t.shape != shape)
    fail(t.file.string(), ": tensor '", name, "' has shape ", shape_str(t.shape), ", expected ",
         shape_str(shape));
  return t;
}

size_t Checkpoint::weight_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.nbytes;
  return n;
}

}  // namespace dsmath
