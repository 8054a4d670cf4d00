// Generation of a batch of prompts on one model replica: every step runs one batched
// forward over the sequences still going (the whole prompt on the first step, then one
// token each), samples each sequence's next token and checks its stop conditions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "worker/engine/sampler.h"
#include "worker/model/llama.h"

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

class Generator {
 public:
  Generator(LlamaModel& model, const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids);

  // Throws Error naming the request (by index) whose prompt is empty or too long.
  std::vector<GenerationResult> generate(const std::vector<GenerationRequest>& requests);

 private:
  LlamaModel& model_;
  const Tokenizer& tokenizer_;
  std::vector<int32_t> eos_token_ids_;
};

}  // namespace dsmath
