// Fuzz target: the batch-job JSONL reader, native and OpenAI batch lines
// (common/jobs/job_input.*). Feeds the input as a whole input file to read_job_input(stream),
// once with the default field names and once with --id-field/--prompt-field/--answer-field set.
// Checks, besides no crash and no ASan/UBSan report:
//   - the only exception is dsmath::Error (a duplicate id); a bad line is an InputError;
//   - every non-blank line gives exactly one problem or one InputError, in line order;
//   - a problem has a prompt or messages, not both; OpenAI lines follow their endpoint
//     (messages for /v1/chat/completions, a prompt for /v1/completions); ids are unique.
// Half the mutations change one line as a JSON tree (json_mutator.h).
#include <cstddef>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>

#include "common/jobs/job_input.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/json_mutator.h"

namespace {

void check(const std::string& text, const dsmath::JobInputOptions& options) {
  std::istringstream in(text);
  dsmath::JobInput input;
  try {
    input = dsmath::read_job_input(in, "fuzz.jsonl", options);
  } catch (const dsmath::Error&) {
    return;
  }
  // The lines that are not blank, as the reader splits them.
  std::istringstream again(text);
  std::string line;
  std::set<size_t> expected;
  for (size_t n = 1; std::getline(again, line); ++n)
    if (line.find_first_not_of(" \t\r") != std::string::npos) expected.insert(n);

  std::set<size_t> seen;
  std::set<std::string> ids;
  size_t last = 0;
  for (const dsmath::JobProblem& p : input.problems) {
    FUZZ_CHECK(p.line > last, "problem of line ", p.line, " out of order");
    last = p.line;
    seen.insert(p.line);
    FUZZ_CHECK(ids.insert(p.id).second, "id \"", p.id, "\" twice");
    FUZZ_CHECK(p.prompt.empty() != p.messages.empty(), "line ", p.line,
               ": needs a prompt or messages, not both");
    if (p.openai) {
      FUZZ_CHECK(!p.id.empty(), "line ", p.line, ": empty custom_id");
      FUZZ_CHECK(p.chat_endpoint == !p.messages.empty(), "line ", p.line,
                 ": prompt or messages do not match the endpoint");
    }
  }
  last = 0;
  for (const dsmath::InputError& e : input.errors) {
    FUZZ_CHECK(e.line > last, "error of line ", e.line, " out of order");
    last = e.line;
    FUZZ_CHECK(seen.insert(e.line).second, "line ", e.line, " is both a problem and an error");
    FUZZ_CHECK(!e.reason.empty(), "line ", e.line, ": an error without a reason");
  }
  FUZZ_CHECK(seen == expected, "not every non-blank line gave one problem or one error");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  check(text, {});
  check(text, {"uid", "text", "target"});
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned seed) {
  return dsmath::fuzz::mutate_json_parts(data, size, max_size, seed, '\n');
}
