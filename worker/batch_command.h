// `dsmath-worker batch`: a batch job run by this worker group alone. Reads problems
// (common/jobs/job_input), builds prompts (chat template + chain of thought, a few-shot template,
// or plain), samples n per problem through the engine, grades each sample against the
// reference, writes it to the output the moment it is done (common/jobs/sample_log: durable,
// resumable, exactly once), and writes the summary at the end.
#pragma once

#include <string>
#include <vector>

#include "common/jobs/job_input.h"
#include "worker/comm/communicator.h"
#include "worker/engine/sampler.h"
#include "worker/model_group.h"

namespace dsmath {

struct BatchOptions {
  GroupOptions group;
  std::string input, output, summary, template_file;
  std::string output_format = "native";  // or "openai"
  JobInputOptions fields;
  bool chat = false;
  std::string cot;  // "", "en", "zh"
  int32_t n = 1;
  SamplingParams params;
  std::vector<std::string> stop;
};

int run_batch(const BatchOptions& options, Communicator& comm);

}  // namespace dsmath
