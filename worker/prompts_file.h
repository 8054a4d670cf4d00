// --prompts-file: one JSON value per line, a prompt string or an object
//   {"id": ..., "prompt": "...", "max_new_tokens": N, "temperature": T, "top_p": P, "top_k": K,
//    "min_p": M, "seed": S, "n": N, "stop": "..." | ["...", ...]}
// where every field but "prompt" is optional and overrides the command-line value for that
// line. A line's request key (which also keys its samples' random streams) is its "id" when
// present, else its line number, so a sample does not change when lines are added, removed or
// reordered around it.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/engine/sampler.h"

namespace dsmath {

struct PromptLine {
  std::string key;     // the id, or the line number
  nlohmann::json id;   // as given (null when the line has none)
  std::string prompt;  // the question text, before the chat template / CoT suffix
  SamplingParams params;
  int32_t n = 1;
  std::vector<std::string> stop;

  // Throws Error naming the field: a sampling value out of range, n below 1, an empty stop.
  void validate() const;
};

// Defaults come from the command line (`defaults`). Throws Error naming the file, the line and
// the field for invalid JSON, an unknown field, a value of the wrong type or range, or an id
// used twice.
std::vector<PromptLine> read_prompts_file(const std::string& path, const PromptLine& defaults);

}  // namespace dsmath
