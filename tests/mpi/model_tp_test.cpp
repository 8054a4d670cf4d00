// The tensor-parallel forward at tp = world size (run under mpirun -np 1, 2 and 4):
//  - matches Hugging Face transformers (tests/data/golden) at every tp;
//  - equals tp 1 (computed on rank 0 alone) bit for bit, MHA and GQA (KV heads replicated at
//    tp 4): the row-parallel sums run in one fixed order at every tp;
//  - a sequence's tokens do not depend on the batch it runs in, greedy or sampled;
//  - bad tp and a shard missing on one rank stop every rank with the message.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "common/core/error.h"
#include "kernels/cpu/gemm.h"
#include "tests/mpi/model_fixture.h"
#include "tests/support/engine_driver.h"
#include "worker/comm/collective_error.h"

namespace dsmath {
namespace {

using testing::is_rank0;
using testing::Replica;

std::vector<std::string> golden_cases() {
  std::vector<std::string> names;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(DSMATH_TEST_DATA) + "/golden"))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

struct GenerationRequest {  // one sample of a prompt
  std::string key;          // keys its random streams (default: "request-<index in the list>")
  std::vector<int32_t> prompt;
  SamplingParams params;
  int32_t sample_index = 0;
};

// Runs `requests` through one Engine on the driver while the other ranks follow; results come
// back in request order (empty on other ranks).
std::vector<testing::Completion> generate(Replica& r,
                                          const std::vector<GenerationRequest>& requests,
                                          EngineConfig config = {}) {
  ModelRunner runner(r.model, *r.comm);
  if (!runner.is_driver()) {
    runner.follow();
    return {};
  }
  std::vector<testing::Completion> results;
  {
    Engine engine(runner, config);
    auto key = [&](size_t i) {
      return requests[i].key.empty() ? "request-" + std::to_string(i) : requests[i].key;
    };
    for (size_t i = 0; i < requests.size(); ++i) {
      // Sample k of a request with n = k + 1 has the stream (key, k); only sample k is kept.
      const GenerationRequest& q = requests[i];
      engine.add({key(i), q.prompt, q.params, q.sample_index + 1});
    }
    const testing::Completions done = testing::run_until_idle(engine);
    for (size_t i = 0; i < requests.size(); ++i)
      results.push_back(done.at({key(i), requests[i].sample_index}));
  }
  runner.shutdown();
  return results;
}

class HfGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGolden, LogitsAndGreedyMatchTransformers) {
  std::ifstream in(std::string(DSMATH_TEST_DATA) + "/golden/" + GetParam() + ".json");
  const nlohmann::json golden = nlohmann::json::parse(in);
  const auto dir =
      testing::make_model(GetParam(), golden["make_model_args"].get<std::vector<std::string>>());
  if (is_rank0() && !golden["config_overrides"].empty()) {  // e.g. rope_scaling
    auto config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    config.update(golden["config_overrides"]);
    std::ofstream(dir / "config.json") << config.dump();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  {
    Replica r(dir, MPI_COMM_WORLD);
    const int64_t vocab = r.checkpoint.config().vocab_size;
    for (size_t p = 0; p < golden["prompts"].size(); ++p) {
      const auto ids = golden["prompts"][p].get<std::vector<int32_t>>();
      const std::vector<float> logits = r.all_logits(ids);
      // Only rank 0 has logits. No ASSERT here: returning early on rank 0 would leave the
      // other ranks waiting in the next prompt's collectives.
      if (!is_rank0()) continue;
      if (logits.size() != ids.size() * size_t(vocab)) {
        ADD_FAILURE() << "prompt " << p << ": " << logits.size() << " logits";
        continue;
      }
      size_t mismatches = 0;
      for (size_t pos = 0; pos < ids.size(); ++pos) {
        const auto& top = golden["top_logits"][p][pos];
        for (size_t k = 0; k < top["ids"].size(); ++k) {
          const int32_t id = top["ids"][k];
          const double ours = logits[pos * size_t(vocab) + size_t(id)];
          const double want = top["values"][k].get<double>();
          if (std::abs(ours - want) > 1e-3 && mismatches++ == 0)
            ADD_FAILURE() << "prompt " << p << " position " << pos << " token " << id << ": logit "
                          << ours << ", transformers " << want;
        }
      }
      EXPECT_EQ(mismatches, 0u) << "prompt " << p << ": logits off by more than 1e-3";
    }

    ASSERT_GT(golden["min_greedy_margin"].get<double>(), 2e-3)
        << "fixture has a near-tie on its greedy path; regenerate it with another seed";
    const Tokenizer tokenizer = Tokenizer::load(dir);
    std::vector<GenerationRequest> requests;
    for (const auto& prompt : golden["prompts"]) {
      GenerationRequest q;
      q.prompt = prompt.get<std::vector<int32_t>>();
      q.params.temperature = 0;
      q.params.ignore_eos = true;
      q.params.max_new_tokens = int64_t(golden["greedy"][0].size());
      requests.push_back(q);
    }
    const auto results = generate(r, requests);  // all prompts in one batch
    for (size_t p = 0; p < results.size(); ++p)
      EXPECT_EQ(results[p].token_ids, golden["greedy"][p].get<std::vector<int32_t>>())
          << "prompt " << p;
  }
  testing::remove_on_rank0(dir);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });

// The largest |log-probability change| between two forwards over the goldens' prompts, on
// tokens above e^-10 (the ones that can be sampled); 0 on ranks other than 0.
template <typename Forward>
double max_logprob_change(const nlohmann::json& golden, int64_t vocab, Forward a, Forward b) {
  auto log_softmax = [vocab](std::vector<float> z) {
    for (size_t row = 0; row < z.size() / size_t(vocab); ++row) {
      float* r = z.data() + row * size_t(vocab);
      const float mx = *std::max_element(r, r + vocab);
      double sum = 0;
      for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(r[i]) - mx);
      for (int64_t i = 0; i < vocab; ++i) r[i] = float(r[i] - mx - std::log(sum));
    }
    return z;
  };
  double worst = 0;
  for (const auto& prompt : golden["prompts"]) {
    const auto ids = prompt.get<std::vector<int32_t>>();
    const auto la = log_softmax(a(ids)), lb = log_softmax(b(ids));
    if (!is_rank0()) continue;
    EXPECT_EQ(la.size(), lb.size());
    for (size_t i = 0; i < std::min(la.size(), lb.size()); ++i)
      if (la[i] > -10) worst = std::max(worst, double(std::abs(la[i] - lb[i])));
  }
  return worst;
}

nlohmann::json first_golden(std::filesystem::path* dir, const std::string& suffix) {
  const std::string name = golden_cases().front();
  std::ifstream in(std::string(DSMATH_TEST_DATA) + "/golden/" + name + ".json");
  nlohmann::json golden = nlohmann::json::parse(in);
  *dir =
      testing::make_model(name + suffix, golden["make_model_args"].get<std::vector<std::string>>());
  MPI_Barrier(MPI_COMM_WORLD);
  return golden;
}

// A bf16 KV cache (--kv-dtype bf16) against the f32 one: how far log-probabilities move
// (printed; the closing note of issue 9 reports it), bounded loosely so that a broken
// conversion (wrong rounding, wrong row) cannot pass.
TEST(KvCacheBf16, LogprobsStayCloseToTheF32Cache) {
  std::filesystem::path dir;
  const nlohmann::json golden = first_golden(&dir, "-kvbf16");
  {
    Replica f32(dir, MPI_COMM_WORLD), bf16(dir, MPI_COMM_WORLD, 256, DType::BF16);
    const double worst = max_logprob_change(
        golden, f32.checkpoint.config().vocab_size,
        std::function([&](const std::vector<int32_t>& ids) { return f32.all_logits(ids); }),
        std::function([&](const std::vector<int32_t>& ids) { return bf16.all_logits(ids); }));
    if (is_rank0()) {
      std::cout << "bf16 KV cache: max |logprob change| over tokens above e^-10: " << worst << "\n";
      EXPECT_LT(worst, 0.05);
      EXPECT_GT(worst, 0.0) << "bf16 rows rounded nothing: is the cache really bf16?";
    }
  }
  testing::remove_on_rank0(dir);
}

// --matmul-precision medium (bf16 activations in the AVX512-BF16 products) against highest.
TEST(MatmulPrecisionMedium, LogprobsStayCloseToHighest) {
  if (cpu::linear_best_path() < cpu::LinearPath::Avx512Bf16)
    GTEST_SKIP() << "medium changes only the AVX512-BF16 and AMX paths, which this CPU lacks";
  std::filesystem::path dir;
  const nlohmann::json golden = first_golden(&dir, "-medium");
  {
    Replica r(dir, MPI_COMM_WORLD);
    auto at = [&r](cpu::MatmulPrecision p) {
      return std::function([&r, p](const std::vector<int32_t>& ids) {
        cpu::set_matmul_precision(p);
        auto logits = r.all_logits(ids);
        cpu::set_matmul_precision(cpu::MatmulPrecision::Highest);
        return logits;
      });
    };
    const double worst =
        max_logprob_change(golden, r.checkpoint.config().vocab_size,
                           at(cpu::MatmulPrecision::Highest), at(cpu::MatmulPrecision::Medium));
    if (is_rank0()) {
      std::cout << "matmul precision medium: max |logprob change| over tokens above e^-10: "
                << worst << "\n";
      EXPECT_LT(worst, 0.25);
      EXPECT_GT(worst, 0.0);
    }
  }
  testing::remove_on_rank0(dir);
}

class TpEqualsTp1 : public ::testing::TestWithParam<int> {};  // param: KV heads of tiny

TEST_P(TpEqualsTp1, LogitsAndGreedyTokens) {
  const std::string kv = std::to_string(GetParam());
  const auto dir = testing::make_model("tp-vs-1-kv" + kv,
                                       {"--preset", "tiny", "--kv-heads", kv, "--seed", "21"});
  const std::vector<int32_t> prompt{100000, 671, 16315, 294, 1527, 64,  20, 538, 223, 18,
                                    304,    223, 20,    344, 5718, 957, 72, 10,  90,  11};
  {
    Replica tp(dir, MPI_COMM_WORLD);
    const std::vector<float> logits = tp.all_logits(prompt);
    if (is_rank0()) {
      Replica single(dir, MPI_COMM_SELF);
      EXPECT_EQ(single.model.layout().tp_size, 1);
      const std::vector<float> reference = single.all_logits(prompt);
      EXPECT_EQ(logits.size(), reference.size());
      size_t differ = 0;
      for (size_t i = 0; i < std::min(logits.size(), reference.size()); ++i)
        differ += std::memcmp(&logits[i], &reference[i], sizeof(float)) != 0;
      EXPECT_EQ(differ, 0u) << "logits of tp " << testing::world_size()
                            << " that are not bitwise those of tp 1";
    }

    // Greedy continuation at this tp equals the one at tp 1.
    const Tokenizer tokenizer = Tokenizer::load(dir);
    GenerationRequest q;
    q.prompt = prompt;
    q.params.temperature = 0;
    q.params.ignore_eos = true;
    q.params.max_new_tokens = 12;
    const auto at_tp = generate(tp, {q});
    if (is_rank0()) {
      Replica single(dir, MPI_COMM_SELF);
      const auto at_1 = generate(single, {q});
      EXPECT_EQ(at_tp[0].token_ids, at_1[0].token_ids);
    }
  }
  testing::remove_on_rank0(dir);
}

INSTANTIATE_TEST_SUITE_P(KvHeads, TpEqualsTp1, ::testing::Values(4, 2),
                         [](const auto& info) { return "kv" + std::to_string(info.param); });

TEST(BatchInvariance, AloneEqualsInsideAMixedBatchOf16) {
  const auto dir =
      testing::make_model("batch", {"--preset", "tiny", "--kv-heads", "2", "--seed", "8"});
  {
    Replica r(dir, MPI_COMM_WORLD);
    const Tokenizer tokenizer = Tokenizer::load(dir);
    for (double temperature : {0.0, 0.9}) {
      std::vector<GenerationRequest> batch;
      for (int i = 0; i < 16; ++i) {
        GenerationRequest q;
        q.key = "problem-" + std::to_string(i);
        std::string text = "Problem " + std::to_string(i) + ":";
        for (int w = 0; w < (i * 7) % 23; ++w) text += " x^" + std::to_string(w) + " +";
        q.prompt = tokenizer.encode(text);
        q.params.temperature = temperature;
        q.params.top_p = 0.95;
        q.params.seed = 77;
        q.params.ignore_eos = true;
        q.params.max_new_tokens = 4 + i % 5;  // sequences finish at different steps
        q.sample_index = i % 3;
        batch.push_back(q);
      }
      const auto together = generate(r, batch);
      const size_t probe = 11;
      const auto alone = generate(r, {batch[probe]});
      if (is_rank0()) {
        EXPECT_EQ(alone[0].token_ids, together[probe].token_ids) << "T=" << temperature;
        for (size_t i = 0; i < batch.size(); ++i)
          EXPECT_EQ(int64_t(together[i].token_ids.size()), batch[i].params.max_new_tokens);
      }
    }
  }
  testing::remove_on_rank0(dir);
}

// A KV cache too small for all 6 sequences at once: later ones are admitted while earlier ones
// decode, so steps mix whole prompts with decode tokens. Every sequence still gets the tokens
// it gets alone.
TEST(BatchInvariance, MixedPrefillAndDecodeStepsUnderALimitedCache) {
  const auto dir = testing::make_model("mixed", {"--preset", "tiny", "--seed", "12"});
  {
    Replica small_cache(dir, MPI_COMM_WORLD, /*kv_blocks=*/5);
    const Tokenizer tokenizer = Tokenizer::load(dir);
    std::vector<GenerationRequest> batch;
    for (int i = 0; i < 6; ++i) {
      GenerationRequest q;
      q.key = "question-" + std::to_string(i);
      q.prompt =
          tokenizer.encode("Question " + std::to_string(i) + std::string(size_t(i) * 3, '?'));
      q.params.temperature = 0.7;
      q.params.seed = 5;
      q.params.ignore_eos = true;
      q.params.max_new_tokens = 6 + 3 * i;  // every sequence needs 2 of the 5 blocks
      batch.push_back(q);
    }
    const auto together = generate(small_cache, batch);
    for (size_t i = 0; i < batch.size(); ++i) {
      const auto alone = generate(small_cache, {batch[i]});
      if (is_rank0()) {
        EXPECT_EQ(alone[0].token_ids, together[i].token_ids) << "sequence " << i;
      }
    }
  }
  testing::remove_on_rank0(dir);
}

// The n samples of one prompt share its prefill (forked KV blocks, copy-on-write on the
// partial last block) and still get exactly the tokens each gets alone.
TEST(SharedPrefill, SamplesOfOnePromptForkItsBlocks) {
  const auto dir =
      testing::make_model("shared", {"--preset", "tiny", "--kv-heads", "2", "--seed", "14"});
  {
    Replica r(dir, MPI_COMM_WORLD);
    const Tokenizer tokenizer = Tokenizer::load(dir);
    SamplingParams p;
    p.temperature = 1.0;
    p.seed = 99;
    p.ignore_eos = true;
    p.max_new_tokens = 20;  // crosses into new blocks after the copy-on-write
    const auto prompt = tokenizer.encode("Find the sum of all integers k with 1 <= k <= 100.");
    ASSERT_GT(prompt.size(), 16u);  // more than one block

    ModelRunner runner(r.model, *r.comm);
    if (!runner.is_driver()) {
      runner.follow();
    } else {
      EngineConfig config;
      config.prefix_caching = false;  // only the fork may share the prompt here
      Engine engine(runner, config);
      engine.add({"q", prompt, p, 4});
      const auto other = tokenizer.encode("Another problem.");
      engine.add({"other", other, p, 1});
      const testing::Completions together = testing::run_until_idle(engine);
      EXPECT_EQ(engine.stats().prefill_tokens, int64_t(prompt.size() + other.size()));
      std::set<std::vector<int32_t>> distinct;
      for (int32_t k = 0; k < 4; ++k) {
        engine.add({"q", prompt, p, k + 1});  // sample k computed alone, as the last of k + 1
        const testing::Completions alone = testing::run_until_idle(engine);
        EXPECT_EQ(alone.at({"q", k}).token_ids, together.at({"q", k}).token_ids) << "sample " << k;
        distinct.insert(together.at({"q", k}).token_ids);
      }
      EXPECT_EQ(distinct.size(), 4u) << "the samples of one prompt should differ";
    }
    runner.shutdown();
  }
  testing::remove_on_rank0(dir);
}

// Counts the collectives of one forward: the embedding's all-reduce, then exactly two per
// layer (after o_proj and after down_proj), and one gather of the logits.
class CountingCommunicator final : public Communicator {
 public:
  explicit CountingCommunicator(Communicator& inner) : inner_(inner) {}
  const Topology& topology() const override { return inner_.topology(); }
  void all_reduce_sum(float* data, size_t count) override {
    ++all_reduces;
    inner_.all_reduce_sum(data, count);
  }
  void all_gather(const float* send, size_t n, float* recv) override {
    ++all_gathers;
    inner_.all_gather(send, n, recv);
  }
  void broadcast(void* data, size_t bytes, int root) override {
    inner_.broadcast(data, bytes, root);
  }
  void barrier() override { inner_.barrier(); }
  void await_broadcast(void* data, size_t bytes, int root,
                       std::chrono::microseconds spin) override {
    inner_.await_broadcast(data, bytes, root, spin);
  }
  int all_reduces = 0, all_gathers = 0;

 private:
  Communicator& inner_;
};

// The embedding's all-reduce, one collective at the end of each row-parallel layer (the
// fixed-order sum's all-gather), and the logits' all-gather: nothing else.
TEST(TensorParallel, OneCollectivePerRowParallelLayer) {
  if (testing::world_size() < 2) GTEST_SKIP() << "tp 1 communicates nothing";
  const auto dir = testing::make_model("count", {"--preset", "tiny", "--seed", "3"});
  {
    std::unique_ptr<Communicator> mpi = make_mpi_communicator(MPI_COMM_WORLD);
    CountingCommunicator counting(*mpi);
    const Checkpoint ckpt = Checkpoint::open(dir);
    CpuBackend backend;
    LlamaModel model(ckpt, backend, counting, 8);
    StepPlan plan;
    plan.sequences.push_back({{100000, 5, 6, 7}, 0, {0}});
    model.forward(plan);
    EXPECT_EQ(counting.all_reduces, 1);
    EXPECT_EQ(counting.all_gathers, 1 + 2 * ckpt.config().num_hidden_layers);
  }
  testing::remove_on_rank0(dir);
}

TEST(ErrorPaths, BadTpStopsEveryRankWithTheMessage) {
  if (testing::world_size() < 2) GTEST_SKIP() << "needs tp >= 2";
  const auto dir = testing::make_model("bad-tp", {"--preset", "tiny", "--seed", "1"});
  if (is_rank0()) {
    // One attention head cannot be split over 2 or 4 ranks.
    auto config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    config["num_attention_heads"] = 1;
    config["num_key_value_heads"] = 1;
    std::ofstream(dir / "config.json") << config.dump();
  }
  MPI_Barrier(MPI_COMM_WORLD);
  std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
  CpuBackend backend;
  try {
    collectively(*comm, [&] {
      const Checkpoint ckpt = Checkpoint::open(dir);
      LlamaModel model(ckpt, backend, *comm, 16);
    });
    ADD_FAILURE() << "expected every rank to fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_attention_heads"), std::string::npos) << e.what();
  }
  testing::remove_on_rank0(dir);
}

TEST(ErrorPaths, ShardMissingOnOneRankStopsEveryRank) {
  if (testing::world_size() < 2) GTEST_SKIP() << "needs a second rank to lose the shard";
  const auto base = testing::make_model(
      "missing-shard", {"--preset", "tiny", "--format", "safetensors-sharded", "--shards", "2"});
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // Each rank reads its own copy, as on separate machines; rank 1's lacks its second shard.
  const auto mine = base.string() + "-rank" + std::to_string(rank);
  std::filesystem::copy(base, mine, std::filesystem::copy_options::recursive);
  if (rank == 1) std::filesystem::remove(mine + "/model-00002-of-00002.safetensors");
  std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
  try {
    collectively(*comm, [&] { Checkpoint::open(mine); });
    ADD_FAILURE() << "expected every rank to fail";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("rank 1"), std::string::npos) << message;
    EXPECT_NE(message.find("model-00002-of-00002.safetensors"), std::string::npos) << message;
  }
  std::filesystem::remove_all(mine);
  testing::remove_on_rank0(base);
}

}  // namespace
}  // namespace dsmath
