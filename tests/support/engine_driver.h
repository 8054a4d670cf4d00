// Test support: run an Engine until everything added to it has finished, and collect each
// sample's tokens and how it ended.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/core/error.h"
#include "worker/engine/engine.h"

namespace dsmath::testing {

struct Completion {
  std::vector<int32_t> token_ids;
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kNone;
  std::string error;
  int32_t cached_prompt_tokens = 0;
  int32_t completion_tokens = 0;  // as the finishing event counts them
};

// Keyed by (request key, sample index); a refused request appears as sample -1.
using Completions = std::map<std::pair<std::string, int32_t>, Completion>;

inline void collect(const std::vector<EngineEvent>& events, Completions& out) {
  for (const EngineEvent& e : events) {
    Completion& c = out[{e.key, e.sample_index}];
    if (e.token) {
      DSMATH_CHECK(c.finish == FinishReason::kNone, "sample ", e.key, "/", e.sample_index,
                   " made a token after it finished");
      c.token_ids.push_back(e.token->token);
      c.logprobs.push_back(e.token->logprob);
    }
    if (e.finish != FinishReason::kNone) {
      DSMATH_CHECK(c.finish == FinishReason::kNone, "sample ", e.key, "/", e.sample_index,
                   " finished twice");
      c.finish = e.finish;
      c.error = e.error;
      c.cached_prompt_tokens = e.cached_prompt_tokens;
      c.completion_tokens = e.completion_tokens;
    }
  }
}

// Steps until the engine holds nothing (at most max_steps steps).
inline Completions run_until_idle(Engine& engine, Completions out = {}, int max_steps = 100000) {
  for (int i = 0; engine.has_work(); ++i) {
    DSMATH_CHECK(i < max_steps, "the engine did not finish within ", max_steps, " steps");
    collect(engine.step(), out);
  }
  return out;
}

}  // namespace dsmath::testing
