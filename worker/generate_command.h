// `dsmath-worker generate`: prompts from the command line or a JSONL file through the engine,
// one output line per sample, printed as soon as its prompt and every earlier one are done.
#pragma once

#include <cstdint>
#include <string>

#include "worker/comm/communicator.h"
#include "worker/model_group.h"
#include "worker/prompts_file.h"

namespace dsmath {

struct GenerateOptions {
  GroupOptions group;
  std::string prompt;
  std::string prompts_file;
  bool chat = false;
  std::string cot;      // "", "en", "zh"
  PromptLine defaults;  // sampling, n and stop strings from the flags
  std::string format = "text";
};

// Every rank of the group calls it; rank 0 drives the engine, the others follow. Returns the
// exit code: 1 when a sample ended with an error (its line says which).
int run_generate(const GenerateOptions& options, Communicator& comm);

}  // namespace dsmath
