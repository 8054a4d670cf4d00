#include "worker/prompt.h"

#include <algorithm>

namespace dsmath {

std::vector<int32_t> build_prompt(const Tokenizer& tokenizer, const std::string& question,
                                  const PromptFormat& format) {
  const std::string text = question + std::string(cot_suffix(format.cot));
  if (!format.chat) return tokenizer.encode(text, /*add_special_tokens=*/true);
  const std::string rendered = render_chat(tokenizer, {{"user", text}});
  return tokenizer.encode(rendered, /*add_special_tokens=*/false);
}

std::vector<int32_t> eos_token_ids(const Checkpoint& checkpoint, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), int32_t(id)) == ids.end())
      ids.push_back(int32_t(id));
  };
  for (int64_t id : checkpoint.config().eos_token_ids) add(id);
  for (int64_t id : checkpoint.generation_config().eos_token_ids) add(id);
  if (auto id = tokenizer.eos_id()) add(*id);
  return ids;
}

}  // namespace dsmath
