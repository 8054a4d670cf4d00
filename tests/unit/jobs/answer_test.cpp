#include "common/jobs/answer.h"

#include <gtest/gtest.h>

#include <tuple>
#include <vector>

namespace dsmath {
namespace {

TEST(ExtractAnswer, EachFormInOrder) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      // Minerva's closing sentence wins over everything else.
      {"So \\boxed{3}. Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.",
       "\\frac{1}{2}"},
      {"Final Answer: The final answer is $x=4$. I hope it is correct.", "x=4"},
      // The last brace-balanced \boxed, nested braces kept.
      {"First \\boxed{1}, then \\boxed{\\frac{a}{b^{2}}}.", "\\frac{a}{b^{2}}"},
      {"The result is $\\boxed{(1, 2)}$.", "(1, 2)"},
      {"\\fbox{42} is it", "42"},
      {"so the answer is \\boxed 7$.", "7"},
      {"\\boxed{\\text{(A)}}", "\\text{(A)}"},
      // "The answer is", to the end of its line.
      {"Adding them up.\nThe answer is 17.", "17"},
      {"the answer is: $\\frac{3}{4}$.\nDone", "\\frac{3}{4}"},
      {"The answer is 1,234 apples.", "1,234 apples"},
      // The last number.
      {"She has 3 apples and buys 5 more, so 8 in total", "8"},
      {"It costs -2.5 dollars", "-2.5"},
      {"about 1,000,000, roughly", "1,000,000"},
      {"ratio 3/4", "3/4"},
  };
  for (const auto& [text, want] : cases) {
    const auto got = extract_answer(text);
    ASSERT_TRUE(got.has_value()) << text;
    EXPECT_EQ(*got, want) << text;
  }
  EXPECT_FALSE(extract_answer("no numbers here").has_value());
  // A truncated \boxed is not an answer; the last number is.
  EXPECT_EQ(*extract_answer("so it is 5, i.e. \\boxed{1"), "1");
  EXPECT_EQ(*extract_answer("so it is \\boxed{\\frac{1}{2"), "2");
}

TEST(ExtractAnswer, LongDegenerateOutputsDoNotBlowTheStack) {
  const std::string digits(200000, '7');
  EXPECT_EQ(extract_answer("so " + digits)->size(), digits.size());
  const std::string words = "The answer is " + std::string(100000, 'a') + " 5";
  EXPECT_TRUE(extract_answer(words).has_value());
  EXPECT_FALSE(answers_equal(digits, "7"));
  EXPECT_FALSE(answers_equal(std::string(100000, '1') + "x", "1"));
}

// Found with tests/fuzz/answer_fuzz (a 180 KB input of nested \frac{ ran it out of its 2 GB):
// every level of \frac{...} copied the rest of the answer and recursed, so memory and stack grew
// with the square and the depth of the nesting. Nesting beyond 32 levels is now taken as it is.
TEST(ExtractAnswer, DeeplyNestedFractionsStayLinear) {
  const int depth = 30000;
  std::string nested;
  for (int i = 0; i < depth; ++i) nested += "\\frac{";
  nested += "1";
  for (int i = 0; i < depth; ++i) nested += "}{2}";
  const std::string boxed = "\\boxed{" + nested + "}";
  EXPECT_EQ(extract_answer(boxed), nested);
  EXPECT_TRUE(answers_equal(boxed, nested));
  EXPECT_FALSE(answers_equal(boxed, "0"));
  EXPECT_EQ(normalize_answer(nested), nested);
  // Below the limit the short forms are still braced and the value computed.
  EXPECT_EQ(normalize_answer("\\frac{\\frac12}{\\sqrt2}"), "\\frac{\\frac{1}{2}}{\\sqrt{2}}");
  EXPECT_TRUE(answers_equal("\\frac{\\frac{\\frac{1}{2}}{2}}{2}", "0.125"));
}

// Each \text{ wrapper stripped scans the rest of the answer: 20,000 nested ones took seconds.
// Past 64 wrappers the rest is kept as it is; a few are still stripped.
TEST(ExtractAnswer, ManyNestedTextWrappersStayLinear) {
  std::string nested;
  for (int i = 0; i < 20000; ++i) nested += "\\text{";
  nested += "7";
  for (int i = 0; i < 20000; ++i) nested += "}";
  EXPECT_FALSE(answers_equal("\\boxed{" + nested + "}", "8"));
  EXPECT_EQ(normalize_answer("\\text{\\textbf{(B)}}"), normalize_answer("(B)"));
  EXPECT_TRUE(answers_equal("\\boxed{5\\text{ cm}}", "5"));
}

TEST(AnswerKey, OneSpellingPerNumberForTheVote) {
  EXPECT_EQ(answer_key("1/2"), answer_key("0.5"));
  EXPECT_EQ(answer_key("\\frac{1}{2}"), answer_key("0.50"));
  EXPECT_EQ(answer_key("1,000"), answer_key("1000"));
  EXPECT_NE(answer_key("(1,2)"), answer_key("(2,1)"));
  EXPECT_EQ(answer_key("\\boxed{}"), "");
}

TEST(ReferenceAnswer, Gsm8kMathAndPlain) {
  EXPECT_EQ(*reference_answer("She sells 16 - 3 - 4 = 9 eggs.\n#### 1,800"), "1800");
  EXPECT_EQ(*reference_answer("So $x = \\boxed{\\frac{1}{2}}$."), "\\frac{1}{2}");
  EXPECT_EQ(*reference_answer("  42 "), "42");
  EXPECT_FALSE(reference_answer("   ").has_value());
}

// (predicted, reference, equal)
using Pair = std::tuple<std::string, std::string, bool>;

const std::vector<Pair>& pairs() {
  static const std::vector<Pair> table = {
      // exact and whitespace
      {"42", "42", true},
      {" 42 ", "42", true},
      {"42", "43", false},
      {"x+1", "x + 1", true},
      {"x+1", "x+2", false},
      {"\\pi", "\\pi", true},
      {"2\\pi", "\\pi", false},
      {"a", "b", false},
      {"", "0", false},
      {"0", "", false},
      // integers, signs, leading zeros, decimals
      {"-3", "-3", true},
      {"-3", "3", false},
      {"+3", "3", true},
      {"007", "7", true},
      {"3.0", "3", true},
      {"3.00", "3", true},
      {"2.50", "2.5", true},
      {"2.5", "2.49", false},
      {".5", "0.5", true},
      {"-.5", "-0.5", true},
      {"0.1", "0.10000000001", true},
      {"0.1", "0.1001", false},
      {"1000000", "1000000.0000001", false /* an integer matches exactly */},
      {"100", "101", false},
      // thousands commas
      {"1,000", "1000", true},
      {"1,234,567", "1234567", true},
      {"12,345.5", "12345.5", true},
      {"1,000", "100", false},
      {"-1,500", "-1500", true},
      // fractions
      {"\\frac{1}{2}", "0.5", true},
      {"\\frac12", "\\frac{1}{2}", true},
      {"\\dfrac{1}{2}", "\\frac{1}{2}", true},
      {"\\tfrac{3}{4}", "0.75", true},
      {"1/2", "\\frac{1}{2}", true},
      {"2/4", "1/2", true},
      {"-\\frac{1}{3}", "-1/3", true},
      {"\\frac{1}{3}", "0.3333", false},
      {"\\frac{1}{3}", "0.3333333333", true},
      {"\\frac{2}{3}", "\\frac{3}{2}", false},
      {"\\frac{10}{4}", "2.5", true},
      {"\\frac{-6}{4}", "-1.5", true},
      {"3/0", "3", false},
      {"\\frac1{3}", "\\frac{1}{3}", true},
      {"\\frac{1}2", "1/2", true},
      {"\\frac{a}{b}", "\\frac{a}{b}", true},
      {"\\frac{a}{b}", "\\frac{b}{a}", false},
      {"\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", true},
      // percentages
      {"50\\%", "50", true},
      {"50%", "0.5", true},
      {"50\\%", "0.5", true},
      {"25%", "25", true},
      {"25%", "0.26", false},
      {"12.5%", "0.125", true},
      {"100%", "1", true},
      {"50%", "5", false},
      // scientific notation
      {"1e3", "1000", true},
      {"1.5e-3", "0.0015", true},
      {"2E2", "200", true},
      {"3\\times10^{4}", "30000", true},
      {"3 \\times 10^4", "30000", true},
      {"1e3", "100", false},
      // dollars, \left \right, \!, degrees, units, \text
      {"\\$18", "18", true},
      {"$18$", "18", true},
      {"18 dollars", "18", true},
      {"5\\text{ cm}", "5", true},
      {"5 \\text{cm}^2", "5", false},
      {"\\text{5}", "5", true},
      {"\\text{(B)}", "(B)", true},
      {"\\textbf{A}", "A", true},
      {"\\mbox{yes}", "yes", true},
      {"90^\\circ", "90", true},
      {"90^{\\circ}", "90", true},
      {"45\xC2\xB0", "45", true},
      {"\\left(1,2\\right)", "(1,2)", true},
      {"1\\!000", "1000", true},
      {"\\frac{1}{2}\\text{ cups}", "\\frac{1}{2}", true},
      {"10 \\text{ meters}", "10", true},
      {"12 inches", "12", true},
      {"12 inches", "13", false},
      {"\\text{north}", "north", true},
      {"\\text{north}", "south", false},
      {"3\\,000", "3000", true},
      // trailing period, x = form
      {"7.", "7", true},
      {"x = 7", "7", true},
      {"x=7", "7", true},
      {"y = -2", "-2", true},
      {"x = 7", "8", false},
      {"k=\\frac{1}{2}", "0.5", true},
      {"x^2 = 4", "4", false},
      // square roots and expressions compared as strings
      {"\\sqrt{2}", "\\sqrt2", true},
      {"2\\sqrt{3}", "2\\sqrt3", true},
      {"\\sqrt{3}", "\\sqrt{2}", false},
      {"3\\sqrt{2}", "\\sqrt{18}", false /* symbolic: not covered */},
      {"x^2+1", "x^2+1", true},
      {"x^2+1", "1+x^2", false /* symbolic: not covered */},
      {"2x", "2x", true},
      {"\\infty", "\\infty", true},
      {"-\\infty", "\\infty", false},
      // tuples and points
      {"(1,2)", "(1, 2)", true},
      {"(1,2)", "(2,1)", false},
      {"(1,2,3)", "(1,2)", false},
      {"(0.5,2)", "(\\frac{1}{2},2)", true},
      {"(1,000,2)", "(1000,2)", false},
      {"(-1,\\frac{3}{2})", "(-1,1.5)", true},
      {"(3, -4)", "(3,-4)", true},
      {"(a, b)", "(a,b)", true},
      {"(\\sqrt{2}, 1)", "(\\sqrt2, 1)", true},
      // intervals: brackets must agree
      {"[1,2]", "[1, 2]", true},
      {"[1,2)", "[1,2)", true},
      {"[1,2)", "[1,2]", false},
      {"(1,2]", "[1,2]", false},
      {"(-\\infty,3)", "(-\\infty, 3)", true},
      {"[0,\\frac{1}{2}]", "[0,0.5]", true},
      {"(0,1)", "(0,1]", false},
      {"(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)", true},
      // answers with words / choices
      {"(A)", "(A)", true},
      {"A", "A", true},
      {"A", "B", false},
      {"yes", "yes", true},
      {"\\text{(C)}", "(C)", true},
      {"True", "False", false},
      // negative and zero edge cases
      {"0", "0", true},
      {"0", "-0", true},
      {"0", "0.000001", false},
      {"-0.0", "0", true},
      {"1e-7", "0", false},
      {"0.000001", "0.0000010000001", true},
      // big numbers and precision
      {"123456789", "123456789", true},
      {"123456789", "123456790", false},
      {"3.14159", "3.14159", true},
      {"3.14159", "3.1416", false},
      {"1/3", "0.333333333", true},
      {"2/3", "0.6666667", true},
      {"22/7", "3.142857142857", true},
      {"22/7", "3.14", false},
      // GSM8K-style references against model answers
      {"18", "18.00", true},
      {"\\boxed{18}", "18", true /* a left-over \\boxed is unwrapped */},
      {"$1,800", "1800", true},
      {"1800.0", "1,800", true},
      {"-5", "5", false},
      // braces and \left / \right in expressions
      {"\\left[ 1, 2 \\right]", "[1,2]", true},
      {"\\{1,2\\}", "\\{1,2\\}", true},
      {"\\{1,2\\}", "\\{2,1\\}", false /* sets: not covered */},
      // spaces inside fractions and numbers
      {"\\frac {1} {2}", "\\frac{1}{2}", true},
      {"1 / 2", "0.5", true},
      {"- 3", "-3", true},
      // more percentages and decimals
      {"33.3%", "0.333", true},
      {"7.5\\%", "7.5", true},
      {"0.075", "7.5%", true},
      {"40\\%", "0.04", false},
      {"150%", "1.5", true},
      // more fractions
      {"\\frac{100}{3}", "33.3333333333", true},
      {"\\frac{7}{8}", "0.875", true},
      {"\\frac{7}{8}", "0.87", false},
      {"-\\frac{7}{8}", "-0.875", true},
      {"\\dfrac{14}{3}", "14/3", true},
      {"\\frac{9}{12}", "\\frac{3}{4}", true},
      // an integer matches exactly; a Minerva answer may still carry its \boxed
      {"1234567.5", "1234567", false},
      {"1234567", "1234567.0", true},
      {"1e6", "1000000", true},
      {"\\boxed{5}", "5", true},
      {"\\boxed{\\frac{1}{2}}", "0.5", true},
  };
  return table;
}

TEST(AnswersEqual, Table) {
  ASSERT_GE(pairs().size(), 150u);
  for (const auto& [predicted, reference, equal] : pairs())
    EXPECT_EQ(answers_equal(predicted, reference), equal)
        << "'" << predicted << "' vs '" << reference << "' (normalized '"
        << normalize_answer(predicted) << "' vs '" << normalize_answer(reference) << "')";
}

TEST(AnswersEqual, IsSymmetricOnTheTable) {
  for (const auto& [predicted, reference, equal] : pairs())
    EXPECT_EQ(answers_equal(reference, predicted), answers_equal(predicted, reference))
        << predicted << " / " << reference;
}

}  // namespace
}  // namespace dsmath
