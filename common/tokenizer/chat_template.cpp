#include "common/tokenizer/chat_template.h"

#include "common/core/error.h"

namespace dsmath {

std::string_view cot_suffix(CotLanguage language) {
  switch (language) {
    case CotLanguage::kNone:
      return "";
    case CotLanguage::kEnglish:
      return "\nPlease reason step by step, and put your final answer within \\boxed{}.";
    case CotLanguage::kChinese:
      return "\n请通过逐步推理来解答问题，并把最终答案放置于\\boxed{}中。";
  }
  return "";
}

std::string render_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  // DeepSeekMath's chat_template (tokenizer_config.json), written out: BOS text, then each
  // message in order.
  std::string out;
  if (auto bos = tokenizer.bos_id()) out += tokenizer.id_to_token(*bos);
  for (const auto& m : messages) {
    if (m.role == "user") {
      out += "User: " + m.content + "\n\n";
    } else if (m.role == "assistant") {
      const auto eos = tokenizer.eos_id();
      if (!eos)
        fail("chat template: an assistant turn needs an EOS token, and the tokenizer has none");
      out += "Assistant: " + m.content + tokenizer.id_to_token(*eos);
    } else if (m.role == "system") {
      out += m.content + "\n\n";
    } else {
      fail("chat template: unknown role '", m.role, "' (expected system, user or assistant)");
    }
  }
  if (add_generation_prompt) out += "Assistant:";
  return out;
}

}  // namespace dsmath
