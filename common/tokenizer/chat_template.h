// DeepSeekMath prompt formats.
//   chat:  <BOS>User: {q}\n\nAssistant:            (BOS text first; encode without specials)
//          earlier assistant turns end with the EOS text; a system message is written as
//          its content followed by "\n\n" before the first user turn.
//   cot:   the question followed by the chain-of-thought instruction (English or Chinese).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace dsmath {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

enum class CotLanguage { kNone, kEnglish, kChinese };

// "\nPlease reason step by step, and put your final answer within \\boxed{}." and the
// Chinese one from DESIGN.md.
std::string_view cot_suffix(CotLanguage language);

// Renders `messages`; ends with "Assistant:" when add_generation_prompt. The result starts
// with the BOS token's text and is meant to be encoded with add_special_tokens = false.
std::string render_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt = true);

}  // namespace dsmath
