// What the engine schedules. A Request is one add(): a prompt and how to sample it, n times. Each
// of its samples is a Sequence, moving waiting -> running -> finished, and back to waiting when
// preempted (its blocks freed; it is recomputed from its tokens when it runs again).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/block_manager.h"
#include "worker/engine/sampler.h"

namespace dsmath {

enum class FinishReason : uint8_t {
  kNone,
  kEos,        // the model's end-of-sequence token (not with ignore_eos)
  kStopToken,  // one of the request's stop_token_ids
  kLength,     // max_new_tokens, or the model's context is full
  kStop,       // the caller found a stop string (Engine::stop)
  kCancelled,  // Engine::cancel
  kError,      // the request was invalid, or its logits were not finite
};

// "eos", "stop_token", "length", "stop", "cancelled", "error" ("" for kNone).
std::string_view finish_reason_name(FinishReason reason);

struct Request {
  std::string key;
  uint64_t stream = 0;        // rng_stream_id(rng_key or key)
  uint64_t first_sample = 0;  // the random stream of sample i is first_sample + i
  SamplingParams params;
  int32_t prompt_len = 0;
  int64_t capacity = 0;  // positions a sample may reach: prompt + max_new_tokens, within context
  int32_t cached_prompt_tokens = 0;  // prompt tokens the prefix cache supplied
};

struct Sequence {
  std::shared_ptr<Request> request;
  int32_t sample_index = 0;
  uint64_t arrival = 0;         // engine-wide order; the newest running sequence is preempted first
  std::vector<int32_t> tokens;  // the prompt, then the generated tokens
  BlockTable table;             // blocks for positions [0, table.num_tokens)
  int32_t computed = 0;         // positions whose keys and values are in the cache
  std::vector<BlockHash> block_hashes;  // of its full blocks, for the prefix cache
  // The other samples of the request, waiting for this one's prefill to fork it (leader only).
  std::vector<Sequence*> forks;
  bool preempted = false;  // waiting again after a preemption
  // Launched steps holding it whose results have not come back: 1, or 2 when the engine runs a
  // step ahead (EngineConfig::overlap) and launched its next token before this one came back.
  int32_t in_flight = 0;
  // Overlap: `computed` already counts the positions of its step in flight, so the next step
  // may take its next prompt chunk, or (awaiting_token) decode a placeholder for the token that
  // step samples, computed where the sampled ids are before the host knows it.
  bool ahead = false;
  bool awaiting_token = false;
  FinishReason finish = FinishReason::kNone;

  int32_t generated() const { return int32_t(tokens.size()) - request->prompt_len; }
  int32_t pending() const { return int32_t(tokens.size()) - computed; }  // not yet in the cache
};

}  // namespace dsmath
