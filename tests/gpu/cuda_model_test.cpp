// The whole forward and the engine on the GPU against the CPU backend, at tp 1, on the trained
// arithmetic model (tests/data/models/arith, bf16 weights): logits agree within the bf16
// tolerance (the GPU rounds activations to bf16 for its GEMMs), every greedy token agrees
// wherever the CPU's top-2 margin exceeds that tolerance, and the engine's greedy samples are
// the same texts (sampled on the GPU, with logprobs within the tolerance). Without a CUDA device
// every test reports SKIPPED.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/checkpoint/checkpoint.h"
#include "common/text/prompt.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/support/engine_driver.h"
#include "worker/comm/local_communicator.h"
#include "worker/engine/engine.h"
#include "worker/engine/model_runner.h"
#include "worker/model/cpu_backend.h"
#include "worker/model/cuda_backend.h"
#include "worker/model/llama.h"

namespace dsmath {
namespace {

const std::string kModel = std::string(DSMATH_TEST_DATA) + "/models/arith";
// Logit differences the bf16 activations of the GPU's GEMMs may cause on this model (the CPU's
// own medium-precision run moves log-probs by up to 0.065 on the goldens).
constexpr float kLogitTolerance = 0.15f;

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine"

struct Replica {
  explicit Replica(Backend& backend)
      : comm(make_local_communicator()),
        checkpoint(Checkpoint::open(kModel)),
        model(checkpoint, backend, *comm, 256),
        runner(model, *comm) {}
  std::unique_ptr<Communicator> comm;
  Checkpoint checkpoint;
  LlamaModel model;
  ModelRunner runner;
};

// The first `count` held-out problems' prompts; with `min_margin`, only those whose greedy
// answer never had a top-2 logit gap below it (hf_greedy.jsonl, from transformers).
std::vector<std::vector<int32_t>> prompts(int count, float min_margin = 0) {
  const Tokenizer tokenizer = Tokenizer::load(kModel);
  std::ifstream in(kModel + "/heldout.jsonl"), greedy(kModel + "/hf_greedy.jsonl");
  std::vector<std::vector<int32_t>> out;
  std::string line, reference;
  while (int(out.size()) < count && std::getline(in, line) && std::getline(greedy, reference)) {
    const auto problem = nlohmann::json::parse(line);
    const auto hf = nlohmann::json::parse(reference);
    EXPECT_EQ(hf["id"], problem["id"]) << "hf_greedy.jsonl and heldout.jsonl out of step";
    if (hf["min_margin"].get<float>() <= min_margin) continue;
    out.push_back(build_prompt(tokenizer, problem["question"].get<std::string>(),
                               PromptFormat{true, CotLanguage::kEnglish}));
  }
  return out;
}

// One sequence's whole prompt, logits for every token.
StepPlan prompt_plan(const std::vector<int32_t>& prompt) {
  StepPlan plan;
  StepSequence s;
  s.tokens = prompt;
  for (int32_t b = 0; b * 16 < int32_t(prompt.size()); ++b) s.block_table.push_back(b);
  plan.sequences.push_back(s);
  plan.all_logits = true;
  return plan;
}

TEST(CudaModel, PromptLogitsMatchTheCpuWithinBf16Tolerance) {
  REQUIRE_GPU();
  CpuBackend cpu;
  CudaBackend gpu(0, DType::F32);
  Replica c(cpu), g(gpu);
  for (const auto& prompt : prompts(4)) {
    const std::vector<float> lc = c.model.forward(prompt_plan(prompt));
    const std::vector<float> lg = g.model.forward(prompt_plan(prompt));
    ASSERT_EQ(lc.size(), lg.size());
    float worst = 0;
    for (size_t i = 0; i < lc.size(); ++i) {
      ASSERT_TRUE(std::isfinite(lg[i])) << "logit " << i;
      worst = std::max(worst, std::fabs(lc[i] - lg[i]));
    }
    EXPECT_LT(worst, kLogitTolerance)
        << "largest logit difference over " << prompt.size() << " prompt tokens";
  }
}

// Greedy decoding on the CPU; the GPU is fed the CPU's tokens (teacher forcing) and must pick
// the same one wherever the CPU's best token leads the second by more than the tolerance.
TEST(CudaModel, GreedyTokensAgreeWhereTheMarginExceedsTheTolerance) {
  REQUIRE_GPU();
  CpuBackend cpu;
  CudaBackend gpu(0, DType::BF16);  // the bf16 cache too
  Replica c(cpu), g(gpu);
  const int32_t vocab = int32_t(c.model.config().vocab_size);
  int checked = 0;
  for (const auto& prompt : prompts(6)) {
    std::vector<int32_t> table;
    for (int32_t b = 0; b < 8; ++b) table.push_back(b);
    StepPlan plan;
    plan.sequences.push_back({prompt, 0, table, true});
    for (int step = 0; step < 24; ++step) {
      const std::vector<float> lc = c.model.forward(plan);
      const std::vector<float> lg = g.model.forward(plan);
      ASSERT_EQ(lc.size(), size_t(vocab));
      const auto best = std::max_element(lc.begin(), lc.end());
      const int32_t token = int32_t(best - lc.begin());
      float second = -INFINITY;
      for (int32_t t = 0; t < vocab; ++t)
        if (t != token) second = std::max(second, lc[size_t(t)]);
      const int32_t gpu_token = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
      // Each logit may move by the tolerance, so the gap between two by twice it.
      if (*best - second > 2 * kLogitTolerance) {
        EXPECT_EQ(gpu_token, token) << "step " << step << ", CPU margin " << *best - second;
        ++checked;
      }
      StepSequence& s = plan.sequences[0];
      s.first_position += int32_t(s.tokens.size());
      s.tokens = {token};
    }
  }
  EXPECT_GT(checked, 60) << "too few confident tokens to say anything";
}

// Decode steps replayed from CUDA graphs give the same bits as the same steps launched one op
// at a time, including after the batch size changes (a graph per size) and after a longer
// step grows the buffers (every graph retired and captured again).
TEST(CudaModel, GraphReplaysEqualEagerStepsBitForBit) {
  REQUIRE_GPU();
  CudaBackend eager_backend(0, DType::BF16), graph_backend(0, DType::BF16);
  eager_backend.set_graphs(false);
  graph_backend.set_graphs(true);
  Replica eager(eager_backend), graphs(graph_backend);
  const std::vector<std::vector<int32_t>> problems = prompts(3);
  StepPlan plan;
  for (size_t p = 0; p < problems.size(); ++p) {
    std::vector<int32_t> table;
    for (int32_t b = 0; b < 8; ++b) table.push_back(int32_t(p) * 8 + b);
    plan.sequences.push_back({problems[p], 0, table, true});
  }
  for (int step = 0; step < 30; ++step) {
    if (step == 12) plan.sequences.pop_back();  // batch 3 -> 2: another graph
    if (step == 20) {  // more rows than any step so far: buffers grow, graphs retire
      StepSequence longer;
      for (int copy = 0; copy < 2; ++copy)
        for (const auto& p : problems)
          longer.tokens.insert(longer.tokens.end(), p.begin(), p.end());
      for (int32_t b = 0; b * 16 < int32_t(longer.tokens.size()); ++b)
        longer.block_table.push_back(32 + b);
      StepPlan prefill;
      prefill.sequences.push_back(longer);
      ASSERT_EQ(eager.model.forward(prefill), graphs.model.forward(prefill));
    }
    const std::vector<float> a = eager.model.forward(plan), b = graphs.model.forward(plan);
    ASSERT_EQ(a, b) << "step " << step;
    for (size_t i = 0; i < plan.sequences.size(); ++i) {
      StepSequence& s = plan.sequences[i];
      const auto row = a.begin() + std::ptrdiff_t(i) * eager.model.config().vocab_size;
      s.first_position += int32_t(s.tokens.size());
      s.tokens = {int32_t(std::max_element(row, row + eager.model.config().vocab_size) - row)};
    }
  }
  EXPECT_GT(graph_backend.graph_replays(), 15);
  EXPECT_EQ(eager_backend.graph_replays(), 0);
}

// The engine on the GPU, one step at a time and with overlap (each step launched before the
// last one's tokens reach the host, its placeholders filled on the device), against the CPU's.
TEST(CudaModel, EngineGreedySamplesAreTheCpusTexts) {
  REQUIRE_GPU();
  CpuBackend cpu;
  CudaBackend gpu(0, DType::F32);
  Replica c(cpu), g(gpu);
  // Problems where no greedy step is a near tie (the engine's batches vary cuBLAS's shapes).
  const std::vector<std::vector<int32_t>> problems = prompts(16, 2 * kLogitTolerance);
  ASSERT_GE(problems.size(), 8u);
  testing::Completions results[3];
  Replica* replicas[3] = {&c, &g, &g};
  EngineStats overlap_stats;
  for (int i = 0; i < 3; ++i) {
    EngineConfig config;
    config.overlap = i == 2;
    Engine engine(replicas[i]->runner, config);
    for (size_t p = 0; p < problems.size(); ++p) {
      EngineRequest r;
      r.key = cat("problem ", p);
      r.prompt = problems[p];
      r.params.temperature = 0;
      r.params.logprobs = true;
      r.params.max_new_tokens = 48;
      r.params.stop_token_ids = {100001};
      engine.add(std::move(r));
    }
    results[i] = testing::run_until_idle(engine);
    if (config.overlap) overlap_stats = engine.stats();
  }
  EXPECT_FALSE(c.runner.sampled_on_gpu());
  EXPECT_TRUE(g.runner.sampled_on_gpu());  // the GPU's engine sampled where its logits are
  EXPECT_GT(overlap_stats.ahead_tokens, overlap_stats.generated_tokens / 2);
  EXPECT_GT(overlap_stats.dropped_ahead, 0) << "samples ending at the stop token";
  ASSERT_EQ(results[0].size(), problems.size());
  for (const auto& [key, cpu_sample] : results[0])
    for (int i = 1; i < 3; ++i) {
      SCOPED_TRACE(i == 1 ? "one step at a time" : "overlap");
      const auto& gpu_sample = results[i].at(key);
      EXPECT_EQ(gpu_sample.token_ids, cpu_sample.token_ids) << key.first;
      EXPECT_EQ(gpu_sample.finish, cpu_sample.finish) << key.first;
      ASSERT_EQ(gpu_sample.logprobs.size(), cpu_sample.logprobs.size()) << key.first;
      for (size_t t = 0; t < cpu_sample.logprobs.size(); ++t)  // log_softmax moves by both logits
        EXPECT_NEAR(gpu_sample.logprobs[t], cpu_sample.logprobs[t], 2 * kLogitTolerance)
            << key.first << ", token " << t;
    }
}

}  // namespace
}  // namespace dsmath
