// `dsmath tokenize` / `dsmath detokenize`: one JSON line in, one JSON line out; errors name
// the flag, file or stdin line at fault and exit non-zero.
#include <gtest/gtest.h>

#include "tests/unit/tokenizer/test_util.h"

namespace dsmath {
namespace {

const std::string kBin = std::string(DSMATH_BIN_DIR) + "/dsmath";

std::string model_flag(const std::string& name) {
  return " --model " + test::tokenizer_dir(name).string();
}

int run(const std::string& args, const std::string& stdin_text, std::string* out,
        const test::TempDir& tmp) {
  test::write_file(tmp.path() / "stdin.txt", stdin_text);
  return test::run_command(kBin + args + " < " + (tmp.path() / "stdin.txt").string() + " 2>&1",
                           out);
}

TEST(Cli, TokenizeMatchesGoldens) {
  test::TempDir tmp;
  const auto cases = test::read_jsonl(test::tokenizer_dir("deepseek_math_like") / "golden.jsonl");
  std::string input;
  for (const auto& c : cases) input += c["text"].dump() + "\n";
  for (bool special : {true, false}) {
    std::string out;
    ASSERT_EQ(run(std::string(" tokenize") + model_flag("deepseek_math_like") +
                      (special ? "" : " --no-special-tokens"),
                  input, &out, tmp),
              0)
        << out;
    std::istringstream lines(out);
    for (const auto& c : cases) {
      std::string line;
      ASSERT_TRUE(std::getline(lines, line));
      EXPECT_EQ(test::Json::parse(line), c[special ? "ids_special" : "ids"]) << c["text"];
    }
  }
}

TEST(Cli, DetokenizeMatchesGoldens) {
  test::TempDir tmp;
  const auto cases = test::read_jsonl(test::tokenizer_dir("llama2") / "golden.jsonl");
  std::string input;
  for (const auto& c : cases) input += c["ids_special"].dump() + "\n";
  std::string out;
  ASSERT_EQ(run(" detokenize" + model_flag("llama2"), input, &out, tmp), 0) << out;
  std::istringstream lines(out);
  for (const auto& c : cases) {
    std::string line;
    ASSERT_TRUE(std::getline(lines, line));
    EXPECT_EQ(test::Json::parse(line), c["decode"]);
  }
}

TEST(Cli, ErrorsNameTheLineFlagOrFile) {
  test::TempDir tmp;
  std::string out;
  EXPECT_NE(run(" tokenize" + model_flag("llama2"), "\"ok\"\nnot json\n", &out, tmp), 0);
  EXPECT_NE(out.find("stdin line 2"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run(" tokenize" + model_flag("llama2"), "[1, 2]\n", &out, tmp), 0);
  EXPECT_NE(out.find("stdin line 1: expected a JSON string"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run(" detokenize" + model_flag("llama2"), "[1, 99999999]\n", &out, tmp), 0);
  EXPECT_NE(out.find("stdin line 1"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run(" tokenize --model /nonexistent/dir", "", &out, tmp), 0);
  EXPECT_NE(out.find("/nonexistent/dir"), std::string::npos) << out;
  out.clear();
  EXPECT_NE(run(" tokenize", "", &out, tmp), 0);
  EXPECT_NE(out.find("--model"), std::string::npos) << out;
}

}  // namespace
}  // namespace dsmath
