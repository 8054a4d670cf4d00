// Prompt building shared by the worker CLI modes: plain text (tokenizer adds BOS as
// tokenizer_config.json says) or the DeepSeekMath chat format, optionally with the
// chain-of-thought instruction appended to the question.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"

namespace dsmath {

struct PromptFormat {
  bool chat = false;
  CotLanguage cot = CotLanguage::kNone;
};

std::vector<int32_t> build_prompt(const Tokenizer& tokenizer, const std::string& question,
                                  const PromptFormat& format);

// EOS ids from config.json, generation_config.json and the tokenizer, deduplicated.
std::vector<int32_t> eos_token_ids(const Checkpoint& checkpoint, const Tokenizer& tokenizer);

}  // namespace dsmath
