// Generation of a batch of prompts on one model replica (iteration-level batching).
// Each step runs one forward over the running sequences (a new sequence's whole prompt, then
// one token each), samples every sequence's next token and checks its stop conditions.
// Sequences are admitted while their worst-case KV blocks (prompt + max_new_tokens) fit the
// cache, and finished sequences free their blocks for the waiting ones, so any number of
// requests runs in bounded memory without preemption. Requests with the same prompt admitted
// together (the n samples of one problem) share one prefill: the others fork its KV blocks
// (copy-on-write on the partial last block) and sample from its logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/sampler.h"

namespace dsmath {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, BOS included when wanted
  SamplingParams params;
  uint64_t sample_index = 0;  // which of a prompt's samples this is (RNG stream)
};

struct GenerationResult {
  std::string text;                // stop string and EOS excluded
  std::vector<int32_t> token_ids;  // generated tokens (a final EOS / stop token included)
  std::vector<float> logprobs;     // one per generated token, under the raw model
  std::vector<std::vector<TokenLogprob>> top_logprobs;  // when params.top_logprobs > 0
  std::string finish_reason;                            // "stop" or "length"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// Validates a request against a model replica and returns the KV positions it may use
// (prompt + max_new_tokens, within the context). Throws Error naming the request by `index`
// when its sampling parameters are invalid, its prompt is empty or too long for the context,
// or it could never fit the KV cache.
int64_t check_request(const LlamaModel& model, const GenerationRequest& request, size_t index);

class Generator {
 public:
  Generator(ModelRunner& runner, const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids);

  // Driver only. Throws Error naming the request (by index) whose prompt is empty, too long
  // for the context, or too long for the whole KV cache.
  std::vector<GenerationResult> generate(const std::vector<GenerationRequest>& requests);

  // Prompt tokens not computed because another sample of the same prompt prefilled them.
  int64_t shared_prefill_tokens() const { return shared_prefill_tokens_; }

 private:
  ModelRunner& runner_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> eos_token_ids_;
  BlockManager blocks_;
  int64_t shared_prefill_tokens_ = 0;
};

}  // namespace dsmath
