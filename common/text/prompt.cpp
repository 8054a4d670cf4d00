#include "common/text/prompt.h"

#include <algorithm>

#include "common/core/error.h"

namespace dsmath {

std::vector<int32_t> build_prompt(const Tokenizer& tokenizer, const std::string& question,
                                  const PromptFormat& format) {
  if (format.chat) return build_chat_prompt(tokenizer, {{"user", question}}, format.cot);
  const std::string text = question + std::string(cot_suffix(format.cot));
  return tokenizer.encode(text, /*add_special_tokens=*/true);
}

std::vector<int32_t> build_chat_prompt(const Tokenizer& tokenizer,
                                       std::vector<ChatMessage> messages, CotLanguage cot) {
  DSMATH_CHECK(!messages.empty(), "messages: the conversation is empty");
  ptrdiff_t last_user = -1;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    DSMATH_CHECK(role == "system" || role == "user" || role == "assistant", "messages[", i,
                 "].role must be \"system\", \"user\" or \"assistant\", got \"", role, "\"");
    if (role == "user") last_user = ptrdiff_t(i);
  }
  DSMATH_CHECK(last_user >= 0, "messages: the conversation has no \"user\" message");
  messages[size_t(last_user)].content += std::string(cot_suffix(cot));
  return tokenizer.encode(render_chat(tokenizer, messages), /*add_special_tokens=*/false);
}

std::vector<int32_t> eos_token_ids(const ModelConfig& config,
                                   const GenerationConfig& generation_config,
                                   const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end())
      ids.push_back(int32_t(id));
  };
  for (int64_t id : config.eos_token_ids) add(id);
  for (int64_t id : generation_config.eos_token_ids) add(id);
  if (auto id = tokenizer.eos_id()) add(*id);
  return ids;
}

}  // namespace dsmath
