// DeepSeekMath chat template and chain-of-thought suffixes, against transformers'
// apply_chat_template on deepseek_math_like's chat_template (chat_golden.jsonl).
#include <gtest/gtest.h>

#include "common/core/error.h"
#include "common/tokenizer/chat_template.h"
#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

TEST(ChatTemplate, MatchesTransformersApplyChatTemplate) {
  const auto dir = test::tokenizer_dir("deepseek_math_like");
  const Tokenizer t = Tokenizer::load(dir);
  const auto cases = test::read_jsonl(dir / "chat_golden.jsonl");
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["messages"].dump());
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string text = render_chat(t, messages, c["add_generation_prompt"].get<bool>());
    EXPECT_EQ(text, c["text"].get<std::string>());
    EXPECT_EQ(t.encode(text, false), test::ids_of(c["ids"]));
  }
}

TEST(ChatTemplate, QuestionPrompt) {
  const Tokenizer t = Tokenizer::load(test::tokenizer_dir("deepseek_math_like"));
  EXPECT_EQ(render_chat(t, {{"user", "What is 2+2?"}}),
            "<｜begin▁of▁sentence｜>User: What is 2+2?\n\nAssistant:");
  EXPECT_THROW(render_chat(t, {{"tool", "x"}}), Error);
}

TEST(CotSuffix, EnglishAndChinese) {
  EXPECT_EQ(cot_suffix(CotLanguage::kEnglish),
            "\nPlease reason step by step, and put your final answer within \\boxed{}.");
  EXPECT_EQ(cot_suffix(CotLanguage::kChinese),
            "\n\xE8\xAF\xB7\xE9\x80\x9A\xE8\xBF\x87\xE9\x80\x90\xE6\xAD\xA5\xE6\x8E\xA8\xE7\x90\x86"
            "\xE6\x9D\xA5\xE8\xA7\xA3\xE7\xAD\x94\xE9\x97\xAE\xE9\xA2\x98\xEF\xBC\x8C\xE5\xB9\xB6"
            "\xE6\x8A\x8A\xE6\x9C\x80\xE7\xBB\x88\xE7\xAD\x94\xE6\xA1\x88\xE6\x94\xBE\xE7\xBD\xAE"
            "\xE4\xBA\x8E\\boxed{}\xE4\xB8\xAD\xE3\x80\x82");
  EXPECT_EQ(cot_suffix(CotLanguage::kNone), "");
}

}  // namespace
}  // namespace dsmath
