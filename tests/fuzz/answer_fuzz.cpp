// Fuzz target: answer extraction and grading (common/jobs/answer.*).
// The input is a model output and a reference, separated by the first NUL byte (no NUL: the
// same text is both). Runs extract_answer, reference_answer, normalize_answer, answer_key and
// answers_equal on them.
// Checks, besides no crash (deep nesting, long inputs, std::regex) and no ASan/UBSan report:
//   - nothing throws;
//   - grading is symmetric: answers_equal(a, b) == answers_equal(b, a);
//   - an answer equals itself exactly when it normalizes to something non-empty;
//   - answer_key (what a majority vote counts) gives the same key for the same answer.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/jobs/answer.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view output = input.substr(0, nul);
  const std::string_view reference = nul == std::string_view::npos ? input : input.substr(nul + 1);

  const std::optional<std::string> predicted = dsmath::extract_answer(output);
  const std::optional<std::string> expected = dsmath::reference_answer(reference);
  for (std::string_view a : {output, reference}) {
    const std::string normalized = dsmath::normalize_answer(a);
    FUZZ_CHECK(dsmath::answers_equal(a, a) == !normalized.empty(),
               "an answer that normalizes to \"", normalized, "\" is not equal to itself");
    FUZZ_CHECK(dsmath::answer_key(a) == dsmath::answer_key(a), "answer_key is not a function");
  }
  if (predicted && expected) {
    FUZZ_CHECK(dsmath::answers_equal(*predicted, *expected) ==
                   dsmath::answers_equal(*expected, *predicted),
               "grading is not symmetric for \"", *predicted, "\" and \"", *expected, "\"");
  }
  FUZZ_CHECK(dsmath::answers_equal(output, reference) == dsmath::answers_equal(reference, output),
             "grading is not symmetric");
  return 0;
}
