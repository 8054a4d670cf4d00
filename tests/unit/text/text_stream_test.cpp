// TextStream: streamed text never takes anything back, never splits a UTF-8 character, ends
// before the earliest stop string (also one spread over several tokens), and holds back only
// what could still begin a stop string.
#include "common/text/text_stream.h"

#include <gtest/gtest.h>

#include "common/core/error.h"

namespace dsmath {
namespace {

const Tokenizer& tokenizer() {
  static const Tokenizer t =
      Tokenizer::load(std::string(DSMATH_TEST_DATA) + "/tokenizers/deepseek_math_like");
  return t;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

// Streams `text`'s tokens; returns the concatenated deltas, checking each one on the way.
std::string stream(TextStream& ts, const std::string& text) {
  std::string out;
  for (int32_t id : tokenizer().encode(text, /*add_special_tokens=*/false)) {
    const std::string delta = ts.push(id);
    EXPECT_TRUE(valid_utf8(delta)) << "half a character in '" << delta << "'";
    out += delta;
    EXPECT_EQ(out, ts.text());
  }
  out += ts.finish();
  return out;
}

TEST(TextStream, WithoutStopStringsEmitsTheWholeText) {
  const std::string text = "Let x = 3. 请通过逐步推理来解答问题 ∫x² dx = x³/3.";
  TextStream ts(tokenizer(), {});
  EXPECT_EQ(stream(ts, text), text);
  EXPECT_FALSE(ts.stopped());
}

TEST(TextStream, EndsBeforeTheEarliestStopString) {
  TextStream ts(tokenizer(), {"Final", "\\boxed{"});
  EXPECT_EQ(stream(ts, "So 2+2 = 4, thus \\boxed{4}. Final answer."), "So 2+2 = 4, thus ");
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(ts.matched_stop(), "\\boxed{");
  EXPECT_EQ(ts.push(5), "");  // nothing after the stop
}

TEST(TextStream, HoldsBackOnlyWhatMayStartAStopString) {
  TextStream ts(tokenizer(), {"\n\nUser:"});
  std::string seen;
  for (int32_t id : tokenizer().encode("The answer is 7.\n\nNext", false)) seen += ts.push(id);
  EXPECT_EQ(seen, "The answer is 7.\n\nNext") << "a near miss is released once it cannot match";
  TextStream held(tokenizer(), {"\n\nUser:"});
  seen.clear();
  for (int32_t id : tokenizer().encode("The answer is 7.\n\nUs", false)) seen += held.push(id);
  EXPECT_EQ(seen, "The answer is 7.") << "'\\n\\nUs' may still become the stop string";
  EXPECT_EQ(held.finish(), "\n\nUs") << "and is released when the sample ends";
}

TEST(TextStream, EmptyStopStringIsAnError) {
  EXPECT_THROW(TextStream(tokenizer(), {""}), Error);
}

}  // namespace
}  // namespace dsmath
