// Turns one row of logits into the next token.
//
// Order (as vLLM / HF): penalties on the raw logits -> temperature -> top_k -> top_p ->
// min_p -> draw with the counter-based RNG. Temperature 0 (or below 1e-5) means greedy.
// The reported logprob is the chosen token's log-probability under the model, i.e. the
// log_softmax of the raw logits before any of these transforms.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dsmath {

struct SamplingParams {
  double temperature = 1.0;         // 0: greedy
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off
  double repetition_penalty = 1.0;  // HF: divide positive logits, multiply negative ones
  double presence_penalty = 0.0;    // OpenAI: subtract once per token already generated
  double frequency_penalty = 0.0;   // OpenAI: subtract per occurrence in generated tokens
  uint64_t seed = 0;
  int64_t max_new_tokens = 256;
  bool ignore_eos = false;
  std::vector<std::string> stop;        // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS ids
  int64_t top_logprobs = 0;             // also report this many alternatives per token

  // Throws Error naming the field when a value is out of range.
  void validate() const;
};

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampledToken {
  int32_t token;
  float logprob;                  // log_softmax(raw logits)[token]
  std::vector<TokenLogprob> top;  // top_logprobs best alternatives, best first
};

// `history`: prompt + generated tokens so far (repetition penalty looks at both, presence and
// frequency penalties at the generated part, which starts at `prompt_len`).
SampledToken sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> history, size_t prompt_len,
                          uint64_t sample_index, uint64_t step);

}  // namespace dsmath
