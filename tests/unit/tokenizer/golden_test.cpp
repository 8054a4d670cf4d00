// Token ids and decodes must equal Hugging Face tokenizers 0.19.1 / transformers 4.40.2 (and,
// for tokenizer.model, transformers' LlamaTokenizer + sentencepiece) on every golden case.
// Goldens: tools/make_tokenizer_goldens.py.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "common/core/error.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

using test::ids_of;
using test::Json;

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, EncodeAndDecodeMatchHuggingFace) {
  const auto dir = test::tokenizer_dir(GetParam());
  const Tokenizer tokenizer = Tokenizer::load(dir);
  const auto cases = test::read_jsonl(dir / "golden.jsonl");
  ASSERT_GE(cases.size(), 100u);
  for (const Json& c : cases) {
    const std::string text = c["text"];
    SCOPED_TRACE("text: " + Json(text).dump());
    EXPECT_EQ(tokenizer.encode(text, false), ids_of(c["ids"]));
    const auto special = ids_of(c["ids_special"]);
    EXPECT_EQ(tokenizer.encode(text, true), special);
    if (c.contains("decode")) {
      EXPECT_EQ(tokenizer.decode(special, false), c["decode"]);
    }
    EXPECT_EQ(tokenizer.decode(special, true), c["decode_skip"]);
    if (c.contains("partial_ids")) {
      EXPECT_EQ(tokenizer.decode(ids_of(c["partial_ids"]), false), c["partial_decode"]);
    }
  }
}

class JsonOnlyTest : public ::testing::TestWithParam<std::string> {};

// Without tokenizer_config.json only tokenizer.json's own post-processor applies.
TEST_P(JsonOnlyTest, TokenizerJsonAloneUsesItsPostProcessor) {
  const auto dir = test::tokenizer_dir(GetParam());
  test::TempDir tmp;
  std::filesystem::copy_file(dir / "tokenizer.json", tmp.path() / "tokenizer.json");
  const Tokenizer tokenizer = Tokenizer::load(tmp.path());
  for (const Json& c : test::read_jsonl(dir / "golden.jsonl")) {
    SCOPED_TRACE("text: " + c["text"].dump());
    EXPECT_EQ(tokenizer.encode(c["text"].get<std::string>(), true), ids_of(c["ids_json_special"]));
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, GoldenTest,
                         ::testing::Values("deepseek_v3", "llama2", "deepseek_llm_style",
                                           "deepseek_math_like", "subword_bpe",
                                           "sentencepiece_bpe"));
INSTANTIATE_TEST_SUITE_P(Tokenizers, JsonOnlyTest,
                         ::testing::Values("deepseek_v3", "llama2", "deepseek_llm_style",
                                           "deepseek_math_like", "subword_bpe"));

// The shared cases.jsonl (ids from a JavaScript port, which agrees with tokenizers 0.19.1).
TEST(SharedCases, MatchDeepSeekTokenizers) {
  for (const std::string name : {"deepseek_v3", "deepseek_llm_style"}) {
    const auto dir = test::tokenizer_dir(name);
    const Tokenizer tokenizer = Tokenizer::load(dir);
    for (const Json& c : test::read_jsonl(dir / "cases.jsonl")) {
      SCOPED_TRACE(name + ": " + c["text"].dump());
      EXPECT_EQ(tokenizer.encode(c["text"].get<std::string>(), false), ids_of(c["ids"]));
    }
  }
}

TEST(TokenizerVocab, DeepSeekMathShape) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("deepseek_math_like"));
  EXPECT_EQ(t.vocab_size(), 100002);
  EXPECT_EQ(t.bos_id(), 100000);
  EXPECT_EQ(t.eos_id(), 100001);
  EXPECT_TRUE(t.is_special(100000));
  EXPECT_FALSE(t.is_special(100));
  EXPECT_EQ(t.id_to_token(100001), "<｜end▁of▁sentence｜>");
  EXPECT_EQ(t.token_to_id("<｜begin▁of▁sentence｜>"), 100000);
  EXPECT_EQ(t.token_to_id("Ġthe"), t.encode(" the", false).at(0));
  EXPECT_EQ(t.token_to_id("no such token at all"), std::nullopt);
  EXPECT_THROW(t.id_to_token(100002), Error);
}

TEST(TokenizerVocab, Llama2AndSentencePieceSpecials) {
  const Tokenizer llama = Tokenizer::load(test::tokenizer_dir("llama2"));
  EXPECT_EQ(llama.vocab_size(), 32000);
  EXPECT_EQ(llama.bos_id(), 1);
  EXPECT_EQ(llama.eos_id(), 2);
  EXPECT_EQ(llama.id_to_token(1), "<s>");
  const Tokenizer sp = Tokenizer::load(test::tokenizer_dir("sentencepiece_bpe"));
  EXPECT_EQ(sp.vocab_size(), 800);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_TRUE(sp.is_special(0));
  EXPECT_TRUE(sp.is_special(1));
  EXPECT_FALSE(sp.is_special(300));
  EXPECT_EQ(sp.token_to_id("<s>"), 1);
  EXPECT_EQ(sp.token_to_id("not a piece"), std::nullopt);
}

// One Tokenizer serves many request threads; the word cache must not change any result.
TEST(TokenizerThreads, ConcurrentEncodeMatchesGoldens) {
  const auto dir = test::tokenizer_dir("deepseek_llm_style");
  const Tokenizer t = Tokenizer::load(dir);
  const auto cases = test::read_jsonl(dir / "golden.jsonl");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 5; ++round) {
        for (size_t k = 0; k < cases.size(); ++k) {
          const auto& c = cases[(k * 7 + i * 13 + round) % cases.size()];
          if (t.encode(c["text"].get<std::string>(), true) != ids_of(c["ids_special"]))
            ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// Byte-level BPE must be fast: the 128k-vocabulary tokenizer on a long math text.
// A long mixed text round-trips (the per-word cache and merge queue at scale). Speed is
// measured in benchmarks, not asserted here.
TEST(TokenizerLongText, RoundTrips) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("deepseek_v3"));
  std::string text;
  for (int i = 0; i < 2000; ++i) {
    text += "Let $f(x) = " + std::to_string(i) + "x^2 - 5x + 2$; 求导数 😀 \\frac{a}{b}\n";
  }
  const auto ids = t.encode(text, false);
  EXPECT_GT(ids.size(), 40000u);
  EXPECT_EQ(t.decode(ids), text);
}

}  // namespace
}  // namespace dsmath
