// Sampling where the logits are. A step plan carries, for every sample that takes a token from
// the step, which logits row it reads and how it samples (RowSample); the rank that holds the
// logits samples them (the driver at pp 1; the last pipeline stage's tp rank 0 under --pp, so
// that only token ids and the asked-for logprobs cross back to the driver, not 400 KB of f32
// logits per row for the 7B). The draw is keyed as on the driver (SampleKey), so where it runs
// never changes a token.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "worker/engine/sampler.h"

namespace dsmath {

struct RowSample {
  int32_t row = 0;        // among the step's logits rows
  SamplingParams params;  // the fields sample_token reads, the seed among them (limits and
                          // stop ids stay on the driver)
  SampleKey key;
  int32_t prompt_len = 0;
  std::vector<int32_t> history;  // prompt + generated so far; only when a penalty reads it
};

struct RowOutcome {
  SampledToken token;
  std::string error;  // why the row could not be sampled (non-finite logits); token unset
};

// The history a RowSample needs: all of `tokens` when a penalty is set, else none.
std::vector<int32_t> history_for(const SamplingParams& params, const std::vector<int32_t>& tokens);

// Words for StepPlan::sampling, and back (throws Error naming what is malformed).
std::vector<int32_t> encode_row_samples(const std::vector<RowSample>& samples);
std::vector<RowSample> decode_row_samples(std::span<const int32_t> words);

// Samples every row (rows in parallel); `logits` is [rows, vocab].
std::vector<RowOutcome> sample_rows(std::span<const float> logits, size_t vocab,
                                    const std::vector<RowSample>& samples);

// Outcomes as bytes for the trip to the driver; max_outcome_bytes bounds them for a plan's
// samples (errors are cut to kMaxErrorBytes, saying so).
std::vector<char> encode_outcomes(const std::vector<RowOutcome>& outcomes);
std::vector<RowOutcome> decode_outcomes(std::span<const char> bytes);
size_t max_outcome_bytes(const std::vector<RowSample>& samples);
constexpr size_t kMaxErrorBytes = 4096;

}  // namespace dsmath
