// What every rank of a tensor-parallel group runs in one step. Rank 0 (the driver) decides
// it, broadcasts it in this compact form, and every rank then runs the same forward.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dsmath {

// A token the previous launched step samples, unknown when this plan was made (the engine's
// overlap): -1 - i names that step's i-th sample (RowSample). ModelRunner replaces it before the
// forward, on the host or on the device that holds the sampled ids.
constexpr int32_t token_placeholder(int32_t sample) {
  return -1 - sample;
}
constexpr bool is_token_placeholder(int32_t token) {
  return token < 0;
}
constexpr int32_t placeholder_sample(int32_t token) {
  return -1 - token;
}

struct StepSequence {
  std::vector<int32_t> tokens;       // new tokens: a prompt, a prompt chunk or one decode token
  int32_t first_position = 0;        // position of tokens[0]
  std::vector<int32_t> block_table;  // KV blocks covering positions [0, first_position + size)
  bool logits = true;  // this step samples from it (false: a prompt chunk before the last)
};

struct KVBlockCopy {
  int32_t src, dst;
};

struct StepPlan {
  std::vector<KVBlockCopy> copies;  // copy-on-write, applied before the forward
  std::vector<StepSequence> sequences;
  bool all_logits = false;  // logits for every token instead of each sampled sequence's last one
  bool shutdown = false;    // followers leave their loop
  bool idle = false;        // no forward: the driver has no work, followers may sleep
  // How the step's samples take their tokens from its logits rows (the engine's RowSamples,
  // worker/engine/row_sample.h), for the rank that holds the logits; the model carries them
  // unread. Empty: the logits themselves go to the driver.
  std::vector<int32_t> sampling;

  std::vector<int32_t> serialize() const;
  // Throws Error when `words` is not a well-formed plan.
  static StepPlan deserialize(std::span<const int32_t> words);
};

}  // namespace dsmath
