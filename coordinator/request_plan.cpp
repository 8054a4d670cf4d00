#include "coordinator/request_plan.h"

#include <random>

#include "common/core/error.h"
#include "common/text/prompt.h"

namespace dsmath {
namespace {

template <typename... Args>
[[noreturn]] void invalid(const Args&... args) {
  throw RequestError{grpc::StatusCode::INVALID_ARGUMENT, cat(args...)};
}

std::vector<ChatMessage> chat_messages(
    const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages) {
  std::vector<ChatMessage> out;
  for (const v1::ChatMessage& m : messages) out.push_back({m.role(), m.content()});
  return out;
}

// Rendering and tokenizing; the tokenizer's and template's errors name the message at fault.
std::vector<int32_t> encode(const ServedModel& model, const std::string& text,
                            const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
                            const google::protobuf::RepeatedField<int32_t>& ids, bool cot,
                            bool add_special_tokens, const char* text_field) {
  const int given = !text.empty() + !messages.empty() + !ids.empty();
  if (given == 0)
    invalid("the prompt is empty: set one of ", text_field, ", messages or prompt_token_ids");
  if (given > 1) invalid("set only one of ", text_field, ", messages and prompt_token_ids");
  const CotLanguage language = cot ? CotLanguage::kEnglish : CotLanguage::kNone;
  try {
    if (!messages.empty())
      return build_chat_prompt(model.tokenizer, chat_messages(messages), language);
    if (!text.empty()) {
      const std::string full = text + std::string(cot_suffix(language));
      return model.tokenizer.encode(full, add_special_tokens);
    }
  } catch (const Error& e) {
    invalid(e.what());
  }
  for (int i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= model.config.vocab_size)
      invalid("prompt_token_ids[", i, "] = ", ids[i], " is outside the vocabulary [0, ",
              model.config.vocab_size, ")");
  return {ids.begin(), ids.end()};
}

uint64_t draw_seed() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace

RequestPlan plan_request(const v1::GenerateRequest& r, const ServedModel& model,
                         const ServerLimits& limits) {
  RequestPlan plan;
  plan.request_id = r.request_id();
  plan.prompt = encode(model, r.prompt(), r.messages(), r.prompt_token_ids(), r.cot(),
                       /*add_special_tokens=*/true, "prompt");
  const int64_t context = model.config.max_position_embeddings;
  const int64_t prompt_len = int64_t(plan.prompt.size());
  if (prompt_len >= context)
    invalid("the prompt has ", prompt_len, " tokens; the model's context is ", context,
            " tokens, which leaves no room to generate");
  if (limits.max_prompt_tokens > 0 && prompt_len > limits.max_prompt_tokens)
    invalid("the prompt has ", prompt_len, " tokens; this server takes at most ",
            limits.max_prompt_tokens, " (--max-prompt-tokens)");

  // Unset fields: generation_config.json (do_sample false there means greedy), then ours.
  const GenerationConfig& g = model.generation;
  SamplingParams& p = plan.params;
  p.temperature = r.has_temperature() ? r.temperature() : (g.do_sample ? g.temperature : 0.0);
  p.top_p = r.has_top_p() ? r.top_p() : g.top_p;
  p.top_k = r.has_top_k() ? r.top_k() : g.top_k;
  if (r.has_min_p()) p.min_p = r.min_p();
  if (r.has_repetition_penalty()) p.repetition_penalty = r.repetition_penalty();
  if (r.has_presence_penalty()) p.presence_penalty = r.presence_penalty();
  if (r.has_frequency_penalty()) p.frequency_penalty = r.frequency_penalty();
  p.seed = r.has_seed() ? r.seed() : draw_seed();
  p.ignore_eos = r.has_ignore_eos() && r.ignore_eos();

  if (r.has_max_new_tokens()) {
    if (r.max_new_tokens() < 1 || r.max_new_tokens() > limits.max_new_tokens)
      invalid("max_new_tokens must be in [1, ", limits.max_new_tokens, "], got ",
              r.max_new_tokens());
    if (prompt_len + r.max_new_tokens() > context)
      invalid("the prompt (", prompt_len, " tokens) + max_new_tokens (", r.max_new_tokens(),
              ") exceeds the model's context of ", context, " tokens");
    p.max_new_tokens = r.max_new_tokens();
  } else {
    // Unset: as much as the defaults allow, within what the context has left.
    const int64_t wanted = g.max_new_tokens > 0 ? g.max_new_tokens : limits.default_max_new_tokens;
    p.max_new_tokens = std::min<int64_t>({wanted, limits.max_new_tokens, context - prompt_len});
  }

  plan.n = r.has_n() ? r.n() : 1;
  if (plan.n < 1 || plan.n > limits.max_n)
    invalid("n must be in [1, ", limits.max_n, "], got ", plan.n);
  if (r.has_logprobs()) {
    if (r.logprobs() < 0 || r.logprobs() > limits.max_logprobs)
      invalid("logprobs must be in [0, ", limits.max_logprobs, "], got ", r.logprobs());
    p.logprobs = true;
    p.top_logprobs = r.logprobs();
  }
  for (int i = 0; i < r.stop_size(); ++i) {
    if (r.stop(i).empty()) invalid("stop[", i, "] is empty");
    plan.stop.push_back(r.stop(i));
  }
  for (int i = 0; i < r.stop_token_ids_size(); ++i) {
    const int32_t id = r.stop_token_ids(i);
    if (id < 0 || id >= model.config.vocab_size)
      invalid("stop_token_ids[", i, "] = ", id, " is outside the vocabulary [0, ",
              model.config.vocab_size, ")");
    p.stop_token_ids.push_back(id);
  }
  try {
    p.validate();  // the engine's own checks (penalties and the rest), named by field
  } catch (const Error& e) {
    invalid(e.what());
  }
  return plan;
}

std::vector<int32_t> tokenize_request(const v1::TokenizeRequest& r, const ServedModel& model) {
  const bool specials = !r.has_add_special_tokens() || r.add_special_tokens();
  return encode(model, r.text(), r.messages(), {}, r.cot(), specials, "text");
}

}  // namespace dsmath
