// Test support: a random stream of requests against an Engine (arrivals between steps, random
// prompt and output lengths, n in 1..4, shared prefixes, cancellations), and the check that
// every sample that finished equals its request run alone. Used by the in-process engine test
// and by the multi-rank one at tp 1, 2 and 4.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/support/engine_driver.h"

namespace dsmath::testing {

struct StreamOutcome {
  std::map<std::string, EngineRequest> requests;
  std::set<std::string> cancelled;
  Completions completions;
  EngineStats stats;
  int64_t operations = 0;  // adds + cancels + steps
};

// Runs until `operations` operations have been made and everything has finished. Prompts draw
// from a few shared prefixes (so the prefix cache hits and evicts) plus random tails. Half the
// requests stop at `stop_tokens` when given (tokens the model makes often: samples then end
// before their length, as a step that ran ahead of them finds out one step late).
inline StreamOutcome run_random_stream(Engine& engine, uint64_t seed, int64_t operations,
                                       int32_t max_prompt = 70,
                                       const std::vector<int32_t>& stop_tokens = {}) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> p{100000};
    for (int64_t t = 0, len = uniform(20, 40); t < len; ++t)
      p.push_back(int32_t(uniform(10, 5000)));
    prefixes.push_back(p);
  }
  StreamOutcome out;
  int next_key = 0;
  std::vector<std::string> live;
  while (out.operations < operations || engine.has_work()) {
    const bool adding = out.operations < operations;
    // A request or two arrive before about one step in four.
    for (int64_t a = adding && uniform(0, 3) == 0 ? uniform(1, 2) : 0; a > 0;
         --a, ++out.operations) {
      EngineRequest r;
      r.key = "req-" + std::to_string(next_key++);
      if (uniform(0, 2) > 0) r.prompt = prefixes[size_t(uniform(0, 2))];
      if (r.prompt.empty()) r.prompt.push_back(100000);
      for (int64_t t = 0, len = uniform(1, max_prompt - int64_t(r.prompt.size())); t < len; ++t)
        r.prompt.push_back(int32_t(uniform(10, 5000)));
      r.params.temperature = uniform(0, 1) ? 0.0 : 0.9;
      r.params.top_p = uniform(0, 1) ? 1.0 : 0.9;
      r.params.top_k = uniform(0, 3) ? 0 : 40;
      r.params.seed = uint64_t(uniform(0, 3));
      r.params.ignore_eos = true;
      r.params.max_new_tokens = uniform(1, 24);
      r.n = int32_t(uniform(1, 4));
      if (!stop_tokens.empty() && uniform(0, 1)) r.params.stop_token_ids = stop_tokens;
      out.requests[r.key] = r;
      live.push_back(r.key);
      engine.add(r);
    }
    if (adding && !live.empty() && uniform(0, 9) == 0) {
      const std::string key = live[size_t(uniform(0, int64_t(live.size()) - 1))];
      engine.cancel(key);
      out.cancelled.insert(key);
      ++out.operations;
    }
    collect(engine.step(), out.completions);
    ++out.operations;
    std::erase_if(live, [&](const std::string& key) {  // every sample finished
      for (int32_t k = 0; k < out.requests[key].n; ++k) {
        const auto it = out.completions.find({key, k});
        if (it == out.completions.end() || it->second.finish == FinishReason::kNone) return false;
      }
      return true;
    });
  }
  out.stats = engine.stats();
  return out;
}

// Every finished sample equals the same request run alone on a fresh engine (prefix cache
// off); a cancelled sample's tokens are a prefix of its solo run.
inline void expect_samples_equal_alone(ModelRunner& runner, const StreamOutcome& outcome) {
  EngineConfig solo_config;
  solo_config.prefix_caching = false;
  int compared = 0;
  for (const auto& [key, request] : outcome.requests) {
    Engine solo(runner, solo_config);
    solo.add(request);
    const Completions alone = run_until_idle(solo);
    for (int32_t k = 0; k < request.n; ++k) {
      const auto it = outcome.completions.find({key, k});
      if (it == outcome.completions.end()) {
        ADD_FAILURE() << key << "/" << k << " never finished";
        continue;
      }
      const Completion& got = it->second;
      const Completion& want = alone.at({key, k});
      if (got.finish == FinishReason::kCancelled) {
        EXPECT_TRUE(outcome.cancelled.count(key)) << key;
        ASSERT_LE(got.token_ids.size(), want.token_ids.size()) << key << "/" << k;
        EXPECT_TRUE(std::equal(got.token_ids.begin(), got.token_ids.end(), want.token_ids.begin()))
            << key << "/" << k << ": a cancelled sample's tokens are a prefix of its solo run";
        continue;
      }
      EXPECT_TRUE(want.finish == FinishReason::kLength || want.finish == FinishReason::kStopToken)
          << key << "/" << k << " alone: " << want.error;
      EXPECT_EQ(got.finish, want.finish) << key << "/" << k << " " << got.error;
      EXPECT_EQ(got.token_ids, want.token_ids) << key << "/" << k;
      ++compared;
    }
  }
  EXPECT_GT(compared, 20);
}

// A random stream on a whole group: the driver runs it under a small cache (max_step_tokens 24,
// max_running 6, `micro_batches` steps in flight, or one run ahead with `overlap`), checks that
// it preempted, hit the prefix cache, leaked no block and that every sample equals its solo
// run, then releases the followers, which follow until then.
inline void random_stream_on_group(ModelRunner& runner, uint64_t seed, int64_t operations,
                                   int32_t max_prompt, int32_t micro_batches = 1,
                                   bool overlap = false) {
  if (!runner.is_driver()) return runner.follow();
  EngineConfig config;
  config.max_step_tokens = 24;
  config.max_running = 6;
  config.micro_batches = micro_batches;
  config.overlap = overlap;
  StreamOutcome outcome;
  {
    Engine engine(runner, config);
    outcome = run_random_stream(engine, seed, operations, max_prompt);
  }
  EXPECT_GT(outcome.stats.preemptions, 0);
  EXPECT_GT(outcome.stats.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(outcome.stats.kv_blocks_used, 0);
  if (overlap) {
    EXPECT_GT(outcome.stats.ahead_tokens, 0);
  }
  expect_samples_equal_alone(runner, outcome);
  runner.shutdown();
}

}  // namespace dsmath::testing
