// Few-shot prompt templates for base models: the text with "{question}" where the problem
// goes, and the stop strings that end an answer before the model starts the next exemplar.
// A .json file holds {"template": ..., "stop": [...]}; any other file is the template text
// alone. launch/templates ships GSM8K 8-shot (Q:/A:) and MATH Minerva 4-shot
// (Problem:/Solution:).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace dsmath {

struct FewShotTemplate {
  std::string text;
  std::vector<std::string> stop;

  // Throws Error naming the file when it is unreadable, has no "{question}", or bad JSON.
  static FewShotTemplate load(const std::filesystem::path& path);
  std::string render(const std::string& question) const;
};

}  // namespace dsmath
