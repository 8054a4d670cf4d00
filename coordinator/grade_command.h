// `dsmath grade --input F [--text-field text] [--answer-field answer] [--id-field id]
//  [--summary FILE]`: grades texts that already exist (other systems' outputs too) the way
// batch jobs do. Each input line comes back on stdout, in order, with "extracted_answer" and
// "correct" added; lines without an id count as problems of their own in the summary.
#pragma once

#include <string>

namespace dsmath {

struct GradeOptions {
  std::string input, text_field = "text", answer_field = "answer", id_field = "id", summary;
};

int run_grade(const GradeOptions& options);

}  // namespace dsmath
