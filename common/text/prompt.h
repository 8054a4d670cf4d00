// Prompt building shared by the offline worker and the coordinator: plain text (the tokenizer
// adds BOS as tokenizer_config.json says) or the DeepSeekMath chat format, optionally with the
// chain-of-thought instruction appended to the question.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/tokenizer/chat_template.h"
#include "common/tokenizer/tokenizer.h"

namespace dsmath {

struct PromptFormat {
  bool chat = false;
  CotLanguage cot = CotLanguage::kNone;
};

std::vector<int32_t> build_prompt(const Tokenizer& tokenizer, const std::string& question,
                                  const PromptFormat& format);

// A conversation in the chat template, ending with "Assistant:"; the chain-of-thought
// instruction goes after the last user message. Throws Error naming the message when a role
// is unknown or there is no user message.
std::vector<int32_t> build_chat_prompt(const Tokenizer& tokenizer,
                                       std::vector<ChatMessage> messages, CotLanguage cot);

// EOS ids from config.json, generation_config.json and the tokenizer, deduplicated.
std::vector<int32_t> eos_token_ids(const ModelConfig& config,
                                   const GenerationConfig& generation_config,
                                   const Tokenizer& tokenizer);

}  // namespace dsmath
