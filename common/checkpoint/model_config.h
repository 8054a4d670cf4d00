// config.json and generation_config.json of a LlamaForCausalLM checkpoint, as published on
// the Hugging Face hub. Unknown keys are ignored; missing required keys are errors that name
// the file and the key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/core/dtype.h"

namespace dsmath {

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // = num_attention_heads when absent (MHA)
  int64_t head_dim = 0;             // = hidden_size / num_attention_heads when absent
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;       // written as int or float in config.json
  double rope_scaling_factor = 1.0;  // rope_scaling {"type": "linear", "factor": f}, else 1
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be an int or a list
  DType torch_dtype = DType::BF16;

  static ModelConfig load(const std::filesystem::path& config_json);
};

// Defaults the model authors ship; CLI flags override them.
struct GenerationConfig {
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  bool do_sample = false;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;
  int64_t max_new_tokens = 0;  // 0: not given

  // A missing file yields defaults taken from `model` (bos/eos).
  static GenerationConfig load(const std::filesystem::path& generation_config_json,
                               const ModelConfig& model);
};

}  // namespace dsmath
