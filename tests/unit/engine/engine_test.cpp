// The engine driven in-process, without MPI (LocalCommunicator), on a tiny random checkpoint:
// random request streams under caches small enough to chunk, preempt and evict; the prefix
// cache; cancellation; a request whose logits turn NaN; invalid requests; stop tokens, EOS and
// Engine::stop.
#include "worker/engine/engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/checkpoint/checkpoint.h"
#include "tests/support/engine_scenarios.h"
#include "worker/comm/local_communicator.h"
#include "worker/model/cpu_backend.h"

namespace dsmath {
namespace {

using testing::Completions;
using testing::run_until_idle;

std::filesystem::path make_tiny(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("dsmath-engine-" + name + "-" + std::to_string(::getpid()));
  const std::string cmd = std::string(DSMATH_BIN_DIR) + "/dsmath-make-model --preset tiny " +
                          "--kv-heads 2 --seed 31 --out '" + dir.string() + "' > /dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  return dir;
}

// One process, tp 1: the checkpoint, a model with `kv_blocks` blocks, and its runner.
struct LocalReplica {
  LocalReplica(const std::filesystem::path& dir, int32_t kv_blocks)
      : comm(make_local_communicator()),
        checkpoint(Checkpoint::open(dir)),
        model(checkpoint, backend, *comm, kv_blocks),
        runner(model, *comm) {}
  std::unique_ptr<Communicator> comm;
  Checkpoint checkpoint;
  CpuBackend backend;
  LlamaModel model;
  ModelRunner runner;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = make_tiny("tiny"); }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }
  static std::filesystem::path dir_;
};
std::filesystem::path EngineTest::dir_;

EngineRequest greedy(const std::string& key, std::vector<int32_t> prompt, int64_t new_tokens) {
  EngineRequest r;
  r.key = key;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.ignore_eos = true;
  r.params.max_new_tokens = new_tokens;
  return r;
}

std::vector<int32_t> tokens(int32_t first, int32_t count) {
  std::vector<int32_t> t{100000};
  for (int32_t i = 0; i < count - 1; ++i) t.push_back(first + (i * 37) % 3000);
  return t;
}

// 1,000 operations under a 24-block cache and 32-token steps: chunking, preemption and
// eviction all happen, every sample equals its solo run, and no block leaks.
TEST_F(EngineTest, RandomStreamEqualsSoloRunsAndLeaksNoBlock) {
  LocalReplica r(dir_, 24);
  EngineConfig config;
  config.max_step_tokens = 32;
  config.max_running = 8;
  Engine engine(r.runner, config);
  const testing::StreamOutcome outcome = testing::run_random_stream(engine, 7, 1000);
  EXPECT_GT(outcome.stats.preemptions, 0) << "the cache should have been too small";
  EXPECT_GT(outcome.stats.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(outcome.stats.kv_blocks_used, 0);
  EXPECT_EQ(outcome.stats.kv_blocks_free + outcome.stats.kv_blocks_cached, 24);
  EXPECT_EQ(outcome.stats.running + outcome.stats.queued, 0);
  testing::expect_samples_equal_alone(r.runner, outcome);
}

// The same stream with three steps in flight at once (as under pipeline parallelism; in one
// process a step's logits are ready at launch): every sample still equals its solo run, though
// sequences are split over micro-batches, wait for their step to come back, and are cancelled
// while in flight.
TEST_F(EngineTest, RandomStreamWithMicroBatchesEqualsSoloRuns) {
  LocalReplica r(dir_, 24);
  EngineConfig config;
  config.max_step_tokens = 32;
  config.max_running = 8;
  config.micro_batches = 3;
  Engine engine(r.runner, config);
  const testing::StreamOutcome outcome = testing::run_random_stream(engine, 8, 1000);
  EXPECT_GT(outcome.stats.prefix_cache_hit_tokens, 0);
  EXPECT_EQ(outcome.stats.kv_blocks_used, 0);
  EXPECT_EQ(outcome.stats.running + outcome.stats.queued, 0);
  testing::expect_samples_equal_alone(r.runner, outcome);
}

// Overlap: each step launched before the last one's tokens are back, its decodes naming those
// tokens by placeholder. With stop tokens the model makes often, many samples end a step before
// the step that ran ahead of them comes back: every sample still equals its solo run (no token
// after the end), and the ahead rows of ended samples were dropped.
TEST_F(EngineTest, RandomStreamWithOverlapEqualsSoloRuns) {
  LocalReplica r(dir_, 16);
  EngineConfig config;
  config.max_step_tokens = 32;
  config.max_running = 8;
  std::vector<int32_t> frequent;  // the 64 tokens this model makes most often in such a stream
  {
    Engine probe(r.runner, config);
    std::map<int32_t, int> made;
    for (const auto& [key, c] : testing::run_random_stream(probe, 9, 300).completions)
      for (int32_t t : c.token_ids) ++made[t];
    std::vector<std::pair<int, int32_t>> by_count;
    for (auto [t, n] : made) by_count.push_back({n, t});
    std::sort(by_count.rbegin(), by_count.rend());
    for (size_t i = 0; i < std::min<size_t>(64, by_count.size()); ++i)
      frequent.push_back(by_count[i].second);
  }
  config.overlap = true;
  Engine engine(r.runner, config);
  const testing::StreamOutcome outcome = testing::run_random_stream(engine, 9, 500, 70, frequent);
  EXPECT_GT(outcome.stats.preemptions, 0);
  EXPECT_GT(outcome.stats.ahead_tokens, outcome.stats.generated_tokens / 2);
  EXPECT_GT(outcome.stats.dropped_ahead, 0) << "no sample ended while a step ran ahead of it";
  EXPECT_EQ(outcome.stats.kv_blocks_used, 0);
  EXPECT_EQ(outcome.stats.running + outcome.stats.queued, 0);
  int stopped = 0;
  for (const auto& [key, c] : outcome.completions) stopped += c.finish == FinishReason::kStopToken;
  EXPECT_GT(stopped, 3);
  testing::expect_samples_equal_alone(r.runner, outcome);
}

// A plan's token placeholder passes the model's checks only with the outcomes it names (on a
// GPU, where the device fills it); the CPU backend, whose placeholders the host fills, refuses
// any that reaches it.
// Samples forked from one prompt decode together over its shared blocks (the CPU backend reads
// those keys once for the group, cpu::decode_attention_shared): each fork's logits must have the
// bits of the same fork decoded alone. A 150-token prompt fills 9 blocks of 16 (128 shared keys,
// two softmax chunks); five forks copy its partial last block and decode a token each.
TEST_F(EngineTest, ForksDecodingTogetherHaveTheLogitsOfEachAlone) {
  const int32_t block = 16, prompt_len = 150, forks = 5;
  LocalReplica r(dir_, 32);
  std::vector<int32_t> table;
  for (int32_t b = 0; b * block < prompt_len; ++b) table.push_back(b);  // blocks 0..9
  StepPlan prefill;
  prefill.sequences.push_back({tokens(200, prompt_len), 0, table, true});
  r.model.forward(prefill);
  StepPlan together;
  std::vector<StepSequence> fork;
  for (int32_t f = 0; f < forks; ++f) {
    std::vector<int32_t> own = table;
    own.back() = 10 + f;  // its copy of the partial last block
    together.copies.push_back({table.back(), own.back()});
    fork.push_back({{int32_t(300 + 7 * f)}, prompt_len, own, true});
    together.sequences.push_back(fork.back());
  }
  const std::vector<float> batched = r.model.forward(together);
  const size_t vocab = batched.size() / forks;
  for (int32_t f = 0; f < forks; ++f) {
    StepPlan alone;
    alone.sequences.push_back(fork[size_t(f)]);  // rewrites its position with the same K and V
    const std::vector<float> logits = r.model.forward(alone);
    ASSERT_EQ(logits.size(), vocab);
    EXPECT_EQ(0, std::memcmp(logits.data(), batched.data() + f * vocab, vocab * sizeof(float)))
        << "fork " << f;
  }
}

TEST_F(EngineTest, TokenPlaceholdersNeedTheirSampledTokens) {
  LocalReplica r(dir_, 16);
  auto error_of = [&](int32_t token, SampledTokens sampled) {
    StepPlan plan;
    plan.sequences.push_back({{token}, 0, {0}, true});
    try {
      r.model.launch_on_device(plan, sampled);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const int32_t outcome = 0;  // stands for the device's outcomes: never read on the CPU
  EXPECT_NE(error_of(token_placeholder(0), {}).find("names none of the 0 sampled tokens"),
            std::string::npos);
  EXPECT_NE(error_of(token_placeholder(1), {&outcome, 1}).find("names none of the 1"),
            std::string::npos);
  EXPECT_NE(error_of(token_placeholder(0), {&outcome, 1}).find("that nothing filled"),
            std::string::npos)
      << "past the model's checks, to the CPU backend";
  EXPECT_NE(error_of(1 << 30, {}).find("outside the vocabulary"), std::string::npos);
}

TEST_F(EngineTest, OverlapNeedsOneMicroBatch) {
  LocalReplica r(dir_, 16);
  EngineConfig config;
  config.overlap = true;
  config.micro_batches = 2;
  EXPECT_THROW(Engine(r.runner, config), Error);
}

TEST_F(EngineTest, PrefixCacheComputesASharedPrefixOnce) {
  const std::vector<int32_t> prefix = tokens(200, 48);  // three 16-token blocks
  std::vector<int32_t> a = prefix, b = prefix;
  for (int32_t t : {11, 12, 13, 14, 15}) a.push_back(t);
  for (int32_t t : {21, 22, 23}) b.push_back(t);
  Completions with_cache, without;
  for (bool cache : {true, false}) {
    LocalReplica r(dir_, 64);
    EngineConfig config;
    config.prefix_caching = cache;
    Engine engine(r.runner, config);
    engine.add(greedy("a", a, 6));
    Completions done = run_until_idle(engine);
    engine.add(greedy("b", b, 6));
    done = run_until_idle(engine, done);
    const EngineStats s = engine.stats();
    if (cache) {
      EXPECT_EQ(s.prefill_tokens, int64_t(a.size() + b.size() - 48));
      EXPECT_EQ(s.prefix_cache_hit_tokens, 48);
      EXPECT_EQ(done.at({"b", 0}).cached_prompt_tokens, 48);
      EXPECT_EQ(done.at({"a", 0}).cached_prompt_tokens, 0);
      with_cache = done;
    } else {
      EXPECT_EQ(s.prefill_tokens, int64_t(a.size() + b.size()));
      EXPECT_EQ(done.at({"b", 0}).cached_prompt_tokens, 0);
      without = done;
    }
  }
  EXPECT_EQ(with_cache.at({"a", 0}).token_ids, without.at({"a", 0}).token_ids);
  EXPECT_EQ(with_cache.at({"b", 0}).token_ids, without.at({"b", 0}).token_ids);
}

TEST_F(EngineTest, CancelDuringPrefillAndDecodeFreesEveryBlock) {
  LocalReplica r(dir_, 64);
  EngineConfig config;
  config.max_step_tokens = 16;  // a 100-token prompt takes 7 steps
  Engine engine(r.runner, config);
  engine.add(greedy("long", tokens(300, 100), 50));
  engine.step();
  engine.step();
  EXPECT_GT(engine.stats().kv_blocks_used, 0);
  engine.cancel("long");  // still prefilling
  Completions done;
  testing::collect(engine.step(), done);
  EXPECT_EQ(done.at({"long", 0}).finish, FinishReason::kCancelled);
  EXPECT_TRUE(done.at({"long", 0}).token_ids.empty());
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);

  EngineRequest decoding = greedy("short", tokens(400, 10), 50);
  decoding.n = 3;
  engine.add(decoding);
  for (int i = 0; i < 4; ++i) testing::collect(engine.step(), done);
  EXPECT_EQ(done.at({"short", 2}).token_ids.size(), 4u);  // decoding now
  engine.cancel("short");
  engine.cancel("short");  // idempotent
  testing::collect(engine.step(), done);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(done.at({"short", k}).finish, FinishReason::kCancelled);
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);
  EXPECT_EQ(engine.stats().running, 0);
  EXPECT_FALSE(engine.has_work());
}

// A sample still waiting for its leader's prefill can be stopped alone; the leader and the
// other samples go on, and the stopped one never receives a token.
TEST_F(EngineTest, StoppingAForkBeforeThePrefillEndsOnlyThatSample) {
  LocalReplica r(dir_, 64);
  EngineConfig config;
  config.max_step_tokens = 16;
  Engine engine(r.runner, config);
  EngineRequest q = greedy("q", tokens(50, 60), 5);
  q.n = 3;
  engine.add(q);
  Completions done;
  testing::collect(engine.step(), done);  // the first prompt chunk of sample 0
  engine.stop("q", 2);
  done = run_until_idle(engine, done);
  EXPECT_EQ(done.at({"q", 2}).finish, FinishReason::kStop);
  EXPECT_TRUE(done.at({"q", 2}).token_ids.empty());
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(done.at({"q", k}).finish, FinishReason::kLength);
    EXPECT_EQ(done.at({"q", k}).token_ids.size(), 5u);
  }
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

// Writes NaN over the embedding row of `token` in the checkpoint's safetensors file.
void poison_embedding(const std::filesystem::path& file, int32_t token) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t header_len = 0;
  f.read(reinterpret_cast<char*>(&header_len), 8);
  std::string header(header_len, '\0');
  f.read(header.data(), std::streamsize(header_len));
  const auto h = nlohmann::json::parse(header)["model.embed_tokens.weight"];
  ASSERT_EQ(h["dtype"], "BF16");
  const int64_t hidden = h["shape"][1];
  const int64_t begin = h["data_offsets"][0];
  f.seekp(std::streamoff(8 + header_len + uint64_t(begin + token * hidden * 2)));
  const std::vector<uint16_t> nan_row(size_t(hidden), 0x7FC0);  // bf16 quiet NaN
  f.write(reinterpret_cast<const char*>(nan_row.data()), std::streamsize(hidden * 2));
}

TEST_F(EngineTest, NonFiniteLogitsEndThatRequestAlone) {
  const auto dir = make_tiny("nan");
  poison_embedding(dir / "model.safetensors", 777);
  LocalReplica r(dir, 64);
  Engine engine(r.runner, {});
  std::vector<int32_t> bad = tokens(500, 12);
  bad[5] = 777;
  engine.add(greedy("good-1", tokens(600, 20), 8));
  engine.add(greedy("bad", bad, 8));
  engine.add(greedy("good-2", tokens(700, 9), 8));
  const Completions done = run_until_idle(engine);
  EXPECT_EQ(done.at({"bad", 0}).finish, FinishReason::kError);
  EXPECT_NE(done.at({"bad", 0}).error.find("non-finite"), std::string::npos)
      << done.at({"bad", 0}).error;
  EXPECT_NE(done.at({"bad", 0}).error.find("'bad'"), std::string::npos);
  for (const char* key : {"good-1", "good-2"}) {
    EXPECT_EQ(done.at({key, 0}).finish, FinishReason::kLength) << key;
    EXPECT_EQ(done.at({key, 0}).token_ids.size(), 8u) << key;
  }
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);
  std::filesystem::remove_all(dir);
}

TEST_F(EngineTest, InvalidRequestsComeBackAsErrorEvents) {
  LocalReplica r(dir_, 8);  // 128 positions
  Engine engine(r.runner, {});
  engine.add(greedy("ok", tokens(100, 5), 3));
  EngineRequest bad_temp = greedy("temp", tokens(100, 5), 3);
  bad_temp.params.temperature = -1;
  engine.add(bad_temp);
  engine.add(greedy("vocab", {100000, 5, 999999}, 3));
  engine.add(greedy("empty", {}, 3));
  engine.add(greedy("cache", tokens(100, 5), 400));  // 405 positions > 128
  engine.add(greedy("ok", tokens(100, 5), 3));       // duplicate of a live key
  EngineRequest zero_n = greedy("n", tokens(100, 5), 3);
  zero_n.n = 0;
  engine.add(zero_n);
  EngineRequest too_many = greedy("seats", tokens(100, 5), 3);
  too_many.n = engine.config().max_running + 1;  // could never run together
  engine.add(too_many);
  const std::vector<EngineEvent> events = engine.step();
  std::map<std::string, std::string> refused;
  for (const EngineEvent& e : events)
    if (e.sample_index == -1) refused[e.key] += e.error;
  ASSERT_EQ(refused.size(), 7u);
  EXPECT_NE(refused["seats"].find("at most 256 sequences"), std::string::npos) << refused["seats"];
  EXPECT_NE(refused["temp"].find("temperature"), std::string::npos);
  EXPECT_NE(refused["vocab"].find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(refused["empty"].find("no tokens"), std::string::npos);
  EXPECT_NE(refused["cache"].find("KV blocks"), std::string::npos);
  EXPECT_NE(refused["ok"].find("already used"), std::string::npos);
  EXPECT_NE(refused["n"].find("n must be"), std::string::npos);
  Completions done;
  testing::collect(events, done);
  done = run_until_idle(engine, done);
  EXPECT_EQ(done.at({"ok", 0}).token_ids.size(), 3u);
}

// A sampled token is decided by (seed, rng key, sample index, token index) and nothing else:
// another seed or sample index draws other tokens, the same ones under another request key
// draw the same.
TEST_F(EngineTest, SeedRngKeyAndSampleIndexDecideTheSamples) {
  LocalReplica r(dir_, 64);
  Engine engine(r.runner, EngineConfig{});
  auto sampled = [&](const std::string& key, uint64_t seed) {
    EngineRequest q = greedy(key, tokens(300, 20), 12);
    q.params.temperature = 1.0;
    q.params.seed = seed;
    q.rng_key = "problem-7";
    q.n = 2;
    return q;
  };
  engine.add(sampled("a", 1));
  engine.add(sampled("b", 2));
  engine.add(sampled("c", 1));
  const Completions done = run_until_idle(engine);
  EXPECT_NE(done.at({"a", 0}).token_ids, done.at({"b", 0}).token_ids) << "the seed counts";
  EXPECT_NE(done.at({"a", 0}).token_ids, done.at({"a", 1}).token_ids) << "the sample counts";
  EXPECT_EQ(done.at({"a", 0}).token_ids, done.at({"c", 0}).token_ids) << "the key does not";
  EXPECT_EQ(done.at({"a", 1}).token_ids, done.at({"c", 1}).token_ids);
}

// Stop tokens, EOS and Engine::stop, with and without overlap (where the engine learns of the
// end one step after it ran ahead of it).
class EngineEndTest : public EngineTest, public ::testing::WithParamInterface<bool> {};
INSTANTIATE_TEST_SUITE_P(Overlap, EngineEndTest, ::testing::Bool());

TEST_P(EngineEndTest, StopTokenEosAndStopEndSamples) {
  const bool overlap = GetParam();
  LocalReplica r(dir_, 64);
  const std::vector<int32_t> prompt = tokens(900, 15);
  std::vector<int32_t> free_run;
  {
    Engine engine(r.runner, {});  // without overlap: the reference
    engine.add(greedy("free", prompt, 10));
    free_run = run_until_idle(engine).at({"free", 0}).token_ids;
  }
  ASSERT_EQ(free_run.size(), 10u);
  const int32_t third = free_run[2];
  const size_t first_at =
      size_t(std::find(free_run.begin(), free_run.end(), third) - free_run.begin());

  EngineRequest stop_token = greedy("stop-token", prompt, 10);
  stop_token.params.stop_token_ids = {third};
  EngineConfig eos_config;
  eos_config.eos_token_ids = {third};
  eos_config.overlap = overlap;
  EngineRequest eos = greedy("eos", prompt, 10);
  eos.params.ignore_eos = false;
  EngineRequest ignored = greedy("eos-ignored", prompt, 10);
  Engine engine(r.runner, eos_config);
  engine.add(stop_token);
  engine.add(eos);
  engine.add(ignored);
  const Completions done = run_until_idle(engine);
  const std::vector<int32_t> until_third(free_run.begin(),
                                         free_run.begin() + ptrdiff_t(first_at) + 1);
  EXPECT_EQ(done.at({"stop-token", 0}).finish, FinishReason::kStopToken);
  EXPECT_EQ(done.at({"stop-token", 0}).token_ids, until_third);
  EXPECT_EQ(done.at({"eos", 0}).finish, FinishReason::kEos);
  EXPECT_EQ(done.at({"eos", 0}).token_ids, until_third);
  EXPECT_EQ(done.at({"eos-ignored", 0}).finish, FinishReason::kLength);
  EXPECT_EQ(done.at({"eos-ignored", 0}).token_ids, free_run);

  // stop(key, sample) between steps: that sample ends with `stop`, its sibling goes on.
  EngineRequest two = greedy("two", prompt, 10);
  two.n = 2;
  engine.add(two);
  Completions partial;
  for (int i = 0; i < 3; ++i) testing::collect(engine.step(), partial);
  engine.stop("two", 1);
  partial = run_until_idle(engine, partial);
  EXPECT_EQ(partial.at({"two", 1}).finish, FinishReason::kStop);
  EXPECT_EQ(partial.at({"two", 1}).token_ids.size(), 3u);
  EXPECT_EQ(partial.at({"two", 0}).token_ids, free_run);
  EXPECT_EQ(partial.at({"two", 1}).completion_tokens, 3);
  EXPECT_EQ(done.at({"eos", 0}).completion_tokens, int32_t(until_third.size()));
  const EngineStats stats = engine.stats();
  if (overlap) {
    EXPECT_GT(stats.ahead_tokens, 0);
    EXPECT_GE(stats.dropped_ahead, 3) << "stop token, EOS and stop() each found one step late";
  } else {
    EXPECT_EQ(stats.ahead_tokens, 0);
  }
}

TEST_F(EngineTest, WaitForWorkTimesOutWhenIdleAndWakesOnAdd) {
  LocalReplica r(dir_, 16);
  Engine engine(r.runner, {});
  EXPECT_FALSE(engine.wait_for_work(std::chrono::milliseconds(20)));
  std::thread producer([&] { engine.add(greedy("late", tokens(5, 4), 2)); });
  EXPECT_TRUE(engine.wait_for_work(std::chrono::seconds(10)));
  producer.join();
  EXPECT_EQ(run_until_idle(engine).at({"late", 0}).token_ids.size(), 2u);
}

}  // namespace
}  // namespace dsmath
