// Turns one row of logits into the next token.
//
// Order (as vLLM / HF): penalties on the raw logits -> temperature -> top_k -> top_p ->
// min_p -> draw with the counter-based RNG. Temperature 0 (or below 1e-5) means greedy.
// The reported logprob is the chosen token's log-probability under the model, i.e. the
// log_softmax of the raw logits before any of these transforms; it is computed only when asked.
//
// Cost: the vocabulary-wide passes are SIMD kernels (kernels/cpu/sampling.h): one max pass
// (which also rejects NaN / infinite logits), one exp pass and one mask pass when sampling,
// plus a histogram pass for top_k / top_p (truncation.h); the vocabulary is never sorted.
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
  std::vector<int32_t> stop_token_ids;  // besides the model's EOS ids
  bool logprobs = false;                // report the chosen token's logprob
  int64_t top_logprobs = 0;             // also report this many alternatives per token

  // Throws Error naming the field when a value is out of range.
  void validate() const;
  bool greedy() const;
  bool penalized() const;  // a penalty reads the history
};

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0;              // log_softmax(raw logits)[token], when asked
  std::vector<TokenLogprob> top;  // top_logprobs best alternatives, best first
};

// Where a draw comes from: the request's stream (rng_stream_id of its key), the sample, and the
// index of the token within the sample.
struct SampleKey {
  uint64_t stream = 0;
  uint64_t sample_index = 0;
  uint64_t step = 0;
};

// `history`: prompt + generated tokens so far (repetition penalty looks at both, presence and
// frequency penalties at the generated part, which starts at `prompt_len`).
// Throws Error when a logit is NaN or infinite (the model broke down for this sequence).
SampledToken sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> history, size_t prompt_len,
                          const SampleKey& key);

// The penalties on the raw logits, before temperature (as HF and vLLM apply them): what
// sample_token does first when params.penalized().
void apply_penalties(std::vector<float>& z, const SamplingParams& p,
                     std::span<const int32_t> history, size_t prompt_len);

// The error sample_token reports for a non-finite logit (`value`, the first at `token`); the GPU
// sampler reports the same words.
std::string non_finite_logit_message(float value, size_t token);

}  // namespace dsmath
