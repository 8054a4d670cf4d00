// IncrementalDetokenizer: a stream of pushes never emits half a UTF-8 character, and the
// pieces add up to the full decode.
#include <gtest/gtest.h>

#include "common/core/error.h"
#include "common/tokenizer/pretokenizer.h"
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode.h"
#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

std::vector<std::string> stream(const Tokenizer& t, const std::vector<int32_t>& ids,
                                bool skip_special = true) {
  IncrementalDetokenizer detok(t, skip_special);
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(detok.push(id));
  out.push_back(detok.flush());
  return out;
}

std::string join(const std::vector<std::string>& parts) {
  std::string all;
  for (const auto& p : parts) all += p;
  return all;
}

class IncrementalGoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalGoldenTest, PiecesAreWholeCharactersAndSumToDecode) {
  const auto dir = test::tokenizer_dir(GetParam());
  const Tokenizer t = Tokenizer::load(dir);
  for (const auto& c : test::read_jsonl(dir / "golden.jsonl")) {
    SCOPED_TRACE("text: " + c["text"].dump());
    const auto ids = test::ids_of(c["ids_special"]);
    const auto parts = stream(t, ids);
    for (const auto& p : parts) EXPECT_TRUE(unicode::is_valid_utf8(p)) << p;
    EXPECT_EQ(join(parts), t.decode(ids, true));
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, IncrementalGoldenTest,
                         ::testing::Values("deepseek_v3", "llama2", "deepseek_llm_style",
                                           "subword_bpe", "sentencepiece_bpe"));

// Byte-level BPE: the emoji's four bytes arrive as separate tokens, so nothing may be emitted
// until the last one.
TEST(IncrementalDetokenizer, ByteLevelEmojiSplitAcrossTokens) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("deepseek_v3"));
  // The byte-level vocabulary has one token per byte (its printable stand-in char).
  std::vector<int32_t> ids = t.encode("ok ", false);
  for (unsigned char b : std::string("\xF0\x9F\x98\x80")) {
    ids.push_back(t.token_to_id(byte_to_char(b)).value());
  }
  const auto parts = stream(t, ids);
  const size_t n = parts.size();
  EXPECT_EQ(join(parts), "ok \xF0\x9F\x98\x80");
  EXPECT_EQ(parts[n - 2] + parts[n - 1], "\xF0\x9F\x98\x80");  // emitted only when complete
  for (size_t i = n - 5; i < n - 2; ++i) EXPECT_EQ(parts[i], "") << i;
  EXPECT_EQ(t.decode(std::vector<int32_t>(ids.begin(), ids.end() - 1)), "ok \xEF\xBF\xBD");
}

// Byte fallback (Llama 2): CJK and emoji characters become <0xXX> tokens.
TEST(IncrementalDetokenizer, ByteFallbackCjkAndEmoji) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("llama2"));
  const std::string text = "a 𝟙 b 🦀 c 龘";  // 4 + 4 + 3 byte tokens
  const auto ids = t.encode(text, true);
  const auto parts = stream(t, ids);
  EXPECT_EQ(join(parts), text);
  size_t held = 0;
  for (const auto& p : parts) {
    EXPECT_TRUE(unicode::is_valid_utf8(p));
    held += p.empty();
  }
  EXPECT_GE(held, 3u + 3u + 2u) << "all but the last byte token of each character are held back";
}

TEST(IncrementalDetokenizer, SentencePieceByteFallback) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("sentencepiece_bpe"));
  const std::string text = "数学 🌍 and 한국어";
  const auto ids = t.encode(text, true);
  const auto parts = stream(t, ids);
  EXPECT_EQ(join(parts), t.decode(ids, true));
  EXPECT_EQ(join(parts), text);
  size_t held = 0;
  for (const auto& p : parts) {
    EXPECT_TRUE(unicode::is_valid_utf8(p));
    held += p.empty();
  }
  EXPECT_GE(held, 6u) << "한국어 is nine byte tokens, six of them end mid-character";
}

TEST(IncrementalDetokenizer, FlushTurnsAnUnfinishedCharacterIntoReplacement) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("llama2"));
  auto ids = t.encode("x😀", false);
  ids.pop_back();  // drop the last byte token
  const auto parts = stream(t, ids);
  EXPECT_EQ(parts.back(), t.decode(ids).substr(1));  // HF: one U+FFFD per byte of the run
  EXPECT_EQ(join(parts), t.decode(ids));
}

TEST(IncrementalDetokenizer, SpecialTokensSkippedOrKept) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("deepseek_math_like"));
  const auto ids = t.encode("Hi<｜end▁of▁sentence｜>", true);
  EXPECT_EQ(join(stream(t, ids, true)), "Hi");
  EXPECT_EQ(join(stream(t, ids, false)), "<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>");
}

}  // namespace
}  // namespace dsmath
