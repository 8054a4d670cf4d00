#include "coordinator/grade_command.h"

#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/core/error.h"
#include "common/jobs/answer.h"
#include "common/jobs/summary.h"

namespace dsmath {

int run_grade(const GradeOptions& o) {
  std::ifstream in(o.input);
  DSMATH_CHECK(in, "--input: cannot read ", o.input);
  std::map<std::string, int64_t> samples_of;  // id -> samples so far (the sample index)
  int64_t max_samples = 1;
  std::vector<GradedSample> graded;
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::ordered_json j;  // the line comes back with its keys in their order
    try {
      j = nlohmann::ordered_json::parse(text);
    } catch (const std::exception& e) {
      fail(o.input, ":", line, ": invalid JSON: ", e.what());
    }
    DSMATH_CHECK(j.is_object() && j.contains(o.text_field) && j[o.text_field].is_string(), o.input,
                 ":", line, ": no string field \"", o.text_field, "\" (--text-field)");
    const std::optional<std::string> answer = extract_answer(j[o.text_field].get<std::string>());
    j["extracted_answer"] =
        answer ? nlohmann::ordered_json(*answer) : nlohmann::ordered_json(nullptr);
    std::optional<bool> correct;
    if (j.contains(o.answer_field) && !j[o.answer_field].is_null()) {
      const nlohmann::ordered_json& ref = j[o.answer_field];
      const auto reference =
          reference_answer(ref.is_string() ? ref.get<std::string>() : ref.dump());
      correct = answer && reference && answers_equal(*answer, *reference);
      j["correct"] = *correct;
    }
    std::cout << j.dump() << "\n";
    std::string id = std::to_string(line);
    if (j.contains(o.id_field)) {
      const nlohmann::ordered_json& v = j[o.id_field];
      id = v.is_string() ? v.get<std::string>() : v.dump();
    }
    const int64_t index = samples_of[id]++;
    max_samples = std::max(max_samples, index + 1);
    graded.push_back({id, index, answer, correct, 0});
  }
  DSMATH_CHECK(!in.bad(), "--input: cannot read ", o.input);
  std::cout.flush();
  if (!o.summary.empty()) {
    JobSummary with_k(max_samples);  // k = the most samples any problem has
    for (const GradedSample& g : graded) with_k.add(g);
    std::ofstream out(o.summary);
    out << with_k.to_json(0, 0, 0).dump(2) << "\n";
    DSMATH_CHECK(out.good(), "--summary: cannot write ", o.summary);
  }
  return 0;
}

}  // namespace dsmath
