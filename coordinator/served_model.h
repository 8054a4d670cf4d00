// What the coordinator knows of the model it serves, without its weights: config.json,
// generation_config.json, the tokenizer, the EOS ids and the fingerprint worker groups must
// match; and the limits it enforces on requests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/tokenizer/tokenizer.h"

namespace dsmath {

struct ServerLimits {
  int32_t max_n = 64;                    // samples per request
  int32_t max_new_tokens = 4096;         // per sample (also bounded by the context)
  int32_t max_queue = 1024;              // requests waiting for their first token
  int32_t default_max_new_tokens = 256;  // when neither the request nor generation_config says
  int32_t max_logprobs = 20;
  int32_t max_prompt_tokens = 0;         // 0: the model's context - 1
  int32_t max_message_bytes = 64 << 20;  // a request message, before any parsing
};

struct ServedModel {
  std::string name;  // the directory's name
  std::filesystem::path dir;
  ModelConfig config;
  GenerationConfig generation;
  Tokenizer tokenizer;
  std::vector<int32_t> eos_token_ids;
  std::string fingerprint;

  // Throws Error naming the file at fault.
  static ServedModel load(const std::filesystem::path& dir);
};

}  // namespace dsmath
