#include "worker/engine/generator.h"

#include <algorithm>
#include <optional>

#include "common/core/error.h"

namespace dsmath {
namespace {

struct Sequence {
  const GenerationRequest* request;
  KVCache cache;
  IncrementalDetokenizer detokenizer;
  std::vector<int32_t> history;  // prompt + generated
  GenerationResult result;
  bool done = false;
};

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Earliest occurrence of any stop string that ends in the text added since `checked_from`.
std::optional<size_t> find_stop(const std::string& text, size_t checked_from,
                                const std::vector<std::string>& stops) {
  std::optional<size_t> best;
  for (const std::string& s : stops) {
    const size_t from = checked_from >= s.size() ? checked_from - s.size() + 1 : 0;
    const size_t at = text.find(s, from);
    if (at != std::string::npos && (!best || at < *best)) best = at;
  }
  return best;
}

}  // namespace

Generator::Generator(LlamaModel& model, const Tokenizer& tokenizer,
                     std::vector<int32_t> eos_token_ids)
    : model_(model), tokenizer_(tokenizer), eos_token_ids_(std::move(eos_token_ids)) {}

std::vector<GenerationResult> Generator::generate(const std::vector<GenerationRequest>& requests) {
  const int64_t context = model_.config().max_position_embeddings;
  std::vector<Sequence> seqs;
  seqs.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    r.params.validate();
    const int64_t prompt_len = int64_t(r.prompt.size());
    DSMATH_CHECK(prompt_len > 0, "request ", i, ": the prompt has no tokens");
    DSMATH_CHECK(prompt_len < context, "request ", i, ": the prompt has ", prompt_len,
                 " tokens, the model's context (max_position_embeddings) is ", context);
    const int64_t capacity =
        std::min(context, prompt_len + std::max<int64_t>(r.params.max_new_tokens, 1));
    seqs.push_back(Sequence{&r, model_.new_cache(capacity),
                            IncrementalDetokenizer(tokenizer_, /*skip_special_tokens=*/true),
                            r.prompt, GenerationResult{}, false});
    seqs.back().result.prompt_tokens = prompt_len;
    if (r.params.max_new_tokens == 0) {
      seqs.back().result.finish_reason = "length";
      seqs.back().done = true;
    }
  }

  // First step: each prompt whole; later steps: each running sequence's last token.
  for (bool first = true;; first = false) {
    std::vector<SequenceChunk> batch;
    std::vector<Sequence*> running;
    for (Sequence& s : seqs) {
      if (s.done) continue;
      const auto tokens = first ? std::span<const int32_t>(s.history)
                                : std::span<const int32_t>(&s.history.back(), 1);
      batch.push_back({&s.cache, tokens});
      running.push_back(&s);
    }
    if (batch.empty()) break;
    const std::vector<float> logits = model_.forward(batch);
    const int64_t vocab = model_.config().vocab_size;

    for (size_t b = 0; b < running.size(); ++b) {
      Sequence& s = *running[b];
      const SamplingParams& p = s.request->params;
      GenerationResult& out = s.result;
      const SampledToken t = sample_token(
          std::span<const float>(logits.data() + int64_t(b) * vocab, size_t(vocab)), p, s.history,
          s.request->prompt.size(), s.request->sample_index, out.token_ids.size());
      s.history.push_back(t.token);
      out.token_ids.push_back(t.token);
      out.logprobs.push_back(t.logprob);
      if (p.top_logprobs > 0) out.top_logprobs.push_back(t.top);

      const bool eos = !p.ignore_eos && contains(eos_token_ids_, t.token);
      if (eos || contains(p.stop_token_ids, t.token)) {
        out.text += s.detokenizer.flush();
        out.finish_reason = "stop";
      } else {
        const size_t checked = out.text.size();
        out.text += s.detokenizer.push(t.token);
        if (auto at = find_stop(out.text, checked, p.stop)) {
          out.text.resize(*at);
          out.finish_reason = "stop";
        } else if (int64_t(out.token_ids.size()) >= p.max_new_tokens ||
                   s.cache.length() >= s.cache.capacity()) {
          out.text += s.detokenizer.flush();
          out.finish_reason = "length";
        }
      }
      s.done = !out.finish_reason.empty();
    }
  }

  std::vector<GenerationResult> results;
  for (Sequence& s : seqs) {
    s.result.completion_tokens = int64_t(s.result.token_ids.size());
    results.push_back(std::move(s.result));
  }
  return results;
}

}  // namespace dsmath
