// Generation on a seeded tiny checkpoint: stop conditions, logprobs, and that a sequence's
// tokens do not depend on the batch it runs in.
#include "worker/engine/generator.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/checkpoint/checkpoint.h"
#include "common/core/error.h"
#include "tests/unit/model/model_fixture.h"

namespace dsmath {
namespace {

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(
        testing::make_model("generator", {"--preset", "tiny", "--kv-heads", "2", "--seed", "9"}));
    ckpt_ = new Checkpoint(Checkpoint::open(*dir_));
    tokenizer_ = new Tokenizer(Tokenizer::load(*dir_));
    model_ = new LlamaModel(*ckpt_);
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tokenizer_;
    delete ckpt_;
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  GenerationRequest request(const std::string& text, double temperature, int64_t max_new) {
    GenerationRequest r;
    r.prompt = tokenizer_->encode(text);
    r.params.temperature = temperature;
    r.params.max_new_tokens = max_new;
    r.params.ignore_eos = true;
    r.params.seed = 1234;
    return r;
  }

  static std::filesystem::path* dir_;
  static Checkpoint* ckpt_;
  static Tokenizer* tokenizer_;
  static LlamaModel* model_;
};
std::filesystem::path* GeneratorTest::dir_;
Checkpoint* GeneratorTest::ckpt_;
Tokenizer* GeneratorTest::tokenizer_;
LlamaModel* GeneratorTest::model_;

TEST_F(GeneratorTest, StopsAtMaxNewTokensWithLogprobs) {
  Generator g(*model_, *tokenizer_, {100001});
  auto r = g.generate({request("What is 2+2?", 0.8, 7)});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].finish_reason, "length");
  EXPECT_EQ(r[0].token_ids.size(), 7u);
  EXPECT_EQ(r[0].completion_tokens, 7);
  ASSERT_EQ(r[0].logprobs.size(), 7u);
  for (float lp : r[0].logprobs) EXPECT_TRUE(lp <= 0 && std::isfinite(lp));
  EXPECT_EQ(r[0].text, tokenizer_->decode(r[0].token_ids, true));
}

TEST_F(GeneratorTest, StopStringTruncatesTheText) {
  Generator g(*model_, *tokenizer_, {});
  GenerationRequest free_run = request("Compute 3*7.", 0, 24);
  const GenerationResult full = g.generate({free_run})[0];
  ASSERT_GE(full.text.size(), 4u) << "the tiny model produced almost no text";
  // Stop at a substring that the free run produced: the output ends right before it.
  const std::string stop = full.text.substr(full.text.size() / 2, 2);
  GenerationRequest stopped = free_run;
  stopped.params.stop = {stop};
  const GenerationResult r = g.generate({stopped})[0];
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_LE(r.token_ids.size(), full.token_ids.size());
}

TEST_F(GeneratorTest, StopTokenIdEndsTheSequence) {
  Generator g(*model_, *tokenizer_, {});
  GenerationRequest r = request("Compute 3*7.", 0, 16);
  const GenerationResult full = g.generate({r})[0];
  r.params.stop_token_ids = {full.token_ids[3]};
  const GenerationResult stopped = g.generate({r})[0];
  EXPECT_EQ(stopped.finish_reason, "stop");
  const auto first = std::find(full.token_ids.begin(), full.token_ids.end(), full.token_ids[3]);
  EXPECT_EQ(stopped.token_ids.size(), size_t(first - full.token_ids.begin()) + 1);
}

TEST_F(GeneratorTest, BatchInvariantGreedyAndSampled) {
  Generator g(*model_, *tokenizer_, {});
  for (double temperature : {0.0, 0.9}) {
    const std::vector<std::string> prompts = {
        "Let x = 3.", "Solve for y: 2y + 3 = 11, showing every step in turn.",
        "1+1=", "The derivative of sin(x) is"};
    std::vector<GenerationRequest> batch;
    for (const auto& p : prompts) batch.push_back(request(p, temperature, 10));
    const auto together = g.generate(batch);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto alone = g.generate({batch[i]})[0];
      EXPECT_EQ(alone.token_ids, together[i].token_ids) << "prompt " << i << " T=" << temperature;
    }
  }
}

TEST_F(GeneratorTest, RejectsEmptyAndOverlongPrompts) {
  Generator g(*model_, *tokenizer_, {});
  GenerationRequest empty;
  EXPECT_THROW(g.generate({empty}), Error);
  GenerationRequest long_prompt;
  long_prompt.prompt.assign(size_t(ckpt_->config().max_position_embeddings), 5);
  try {
    g.generate({long_prompt});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("max_position_embeddings"), std::string::npos);
  }
}

}  // namespace
}  // namespace dsmath
