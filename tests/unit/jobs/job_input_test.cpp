// The batch-job JSONL reader on a stream: both line formats, and the inputs
// tests/fuzz/job_input_fuzz found wrong (each also kept in tests/fuzz/corpus/job_input).
#include "common/jobs/job_input.h"

#include <gtest/gtest.h>

#include <sstream>

#include "common/core/error.h"

namespace dsmath {
namespace {

JobInput read(const std::string& text, const JobInputOptions& options = {}) {
  std::istringstream in(text);
  return read_job_input(in, "input.jsonl", options);
}

TEST(JobInput, ReadsNativeAndOpenAiLinesFromAStream) {
  const JobInput input =
      read(R"({"id": "a", "question": "1+1?", "answer": "#### 2"})"
           "\n\n"
           R"({"custom_id": "b", "method": "POST", "url": "/v1/chat/completions",)"
           R"( "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,)"
           R"( "n": 2, "seed": 7}})"
           "\n");
  ASSERT_EQ(input.problems.size(), 2u);
  EXPECT_TRUE(input.errors.empty());
  EXPECT_EQ(input.problems[0].id, "a");
  EXPECT_EQ(input.problems[0].reference, "2");
  EXPECT_EQ(input.problems[1].line, 3u);
  EXPECT_TRUE(input.problems[1].chat_endpoint);
  EXPECT_EQ(input.problems[1].max_tokens, 8);
  EXPECT_EQ(input.problems[1].n, 2);
  EXPECT_EQ(input.problems[1].seed, 7u);
}

TEST(JobInput, DuplicateIdNamesTheInputAndLine) {
  try {
    read("{\"id\": \"a\", \"question\": \"q\"}\n{\"id\": \"a\", \"question\": \"r\"}\n");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input.jsonl:2: id \"a\" is used by line 1"),
              std::string::npos)
        << e.what();
  }
}

// An empty id would key all of a problem's samples (random streams, output lines) by "".
TEST(JobInput, EmptyIdIsABadLine) {
  const JobInput input =
      read("{\"id\": \"a\", \"question\": \"q\"}\n{\"id\": \"\", \"question\": \"r\"}\n");
  ASSERT_EQ(input.problems.size(), 1u);
  ASSERT_EQ(input.errors.size(), 1u);
  EXPECT_EQ(input.errors[0].line, 2u);
  EXPECT_NE(input.errors[0].reason.find("\"id\" is empty"), std::string::npos)
      << input.errors[0].reason;
}

// Found by the fuzzer: an integer field given as 1e300 was converted to int64 (undefined
// behaviour; UBSan: "1e+300 is outside the range of representable values of type 'long'"), 2.5
// was truncated to 2 and 2^64 - 1 wrapped to -1. Now such a line is an InputError naming the
// field; any 64-bit integer seed is still taken (a negative one modulo 2^64, as before).
TEST(JobInput, IntegerFieldsOfTheBodyMustBeIntegers) {
  auto line = [](const std::string& field, const std::string& value) {
    return R"({"custom_id": "c", "url": "/v1/completions", "body": {"prompt": "x", ")" + field +
           "\": " + value + "}}\n";
  };
  for (const auto& [field, value] :
       std::vector<std::pair<std::string, std::string>>{{"max_tokens", "1e300"},
                                                        {"max_tokens", "2.5"},
                                                        {"max_tokens", "18446744073709551615"},
                                                        {"n", "-1e19"},
                                                        {"seed", "1e300"}}) {
    const JobInput input = read(line(field, value));
    ASSERT_EQ(input.errors.size(), 1u) << field << " " << value;
    EXPECT_NE(input.errors[0].reason.find("\"body." + field + "\" must be a 64-bit integer"),
              std::string::npos)
        << input.errors[0].reason;
  }
  EXPECT_EQ(read(line("seed", "-1")).problems.at(0).seed, UINT64_MAX);
  EXPECT_EQ(read(line("seed", "18446744073709551615")).problems.at(0).seed, UINT64_MAX);
}

}  // namespace
}  // namespace dsmath
