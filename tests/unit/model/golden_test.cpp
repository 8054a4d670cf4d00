// The CPU forward against Hugging Face transformers' LlamaForCausalLM: fixtures from
// tools/make_model_goldens.py hold, for seeded `tiny` checkpoints (MHA and GQA; bf16, f16 and
// f32; safetensors, sharded safetensors and .bin shards; tied and untied), the top logits at
// every prompt position and the greedy continuation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/checkpoint/checkpoint.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/unit/model/model_fixture.h"
#include "worker/engine/generator.h"
#include "worker/model/llama.h"

namespace dsmath {
namespace {

std::vector<std::string> golden_cases() {
  std::vector<std::string> names;
  for (const auto& e :
       std::filesystem::directory_iterator(std::string(DSMATH_TEST_DATA) + "/golden"))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class HfGolden : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(std::string(DSMATH_TEST_DATA) + "/golden/" + GetParam() + ".json");
    golden_ = nlohmann::json::parse(in);
    dir_ =
        testing::make_model(GetParam(), golden_["make_model_args"].get<std::vector<std::string>>());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  nlohmann::json golden_;
  std::filesystem::path dir_;
};

TEST_P(HfGolden, LogitsMatchTransformers) {
  const Checkpoint ckpt = Checkpoint::open(dir_);
  LlamaModel model(ckpt);
  const int64_t vocab = ckpt.config().vocab_size;
  double worst = 0;
  for (size_t p = 0; p < golden_["prompts"].size(); ++p) {
    const auto ids = golden_["prompts"][p].get<std::vector<int32_t>>();
    KVCache cache = model.new_cache(int64_t(ids.size()));
    const SequenceChunk chunk{&cache, ids};
    const std::vector<float> logits = model.forward({&chunk, 1}, LogitsFor::kAllTokens);
    ASSERT_EQ(logits.size(), ids.size() * size_t(vocab));
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      const auto& top = golden_["top_logits"][p][pos];
      const float* row = logits.data() + pos * size_t(vocab);
      for (size_t k = 0; k < top["ids"].size(); ++k) {
        const int32_t id = top["ids"][k];
        const double want = top["values"][k];
        const double err = std::abs(double(row[id]) - want);
        worst = std::max(worst, err);
        ASSERT_LT(err, 1e-3) << "prompt " << p << " position " << pos << " token " << id;
      }
      const int32_t argmax = int32_t(std::max_element(row, row + vocab) - row);
      const double gap = double(top["values"][0]) - double(top["values"][1]);
      if (gap > 1e-3) EXPECT_EQ(argmax, top["ids"][0].get<int32_t>()) << "position " << pos;
    }
  }
  RecordProperty("max_abs_error", std::to_string(worst));
}

TEST_P(HfGolden, GreedyContinuationMatchesTransformers) {
  ASSERT_GT(golden_["min_greedy_margin"].get<double>(), 2e-3)
      << "fixture has a near-tie on its greedy path; regenerate it with other prompts or seeds";
  const Checkpoint ckpt = Checkpoint::open(dir_);
  const Tokenizer tokenizer = Tokenizer::load(dir_);
  LlamaModel model(ckpt);
  Generator generator(model, tokenizer, {});
  std::vector<GenerationRequest> requests;
  for (const auto& prompt : golden_["prompts"]) {
    GenerationRequest r;
    r.prompt = prompt.get<std::vector<int32_t>>();
    r.params.temperature = 0;
    r.params.ignore_eos = true;
    r.params.max_new_tokens = int64_t(golden_["greedy"][0].size());
    requests.push_back(r);
  }
  // All prompts in one batch: batching must not change the result.
  const auto results = generator.generate(requests);
  for (size_t p = 0; p < results.size(); ++p) {
    EXPECT_EQ(results[p].token_ids, golden_["greedy"][p].get<std::vector<int32_t>>())
        << "prompt " << p;
    EXPECT_EQ(results[p].finish_reason, "length");
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfGolden, ::testing::ValuesIn(golden_cases()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dsmath
