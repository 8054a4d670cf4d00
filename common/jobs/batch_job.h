// What a batch job is, whoever runs its samples: the problems, how each one's prompt, sampling
// and stop strings are built, what the output already holds, and what happens when a sample
// finishes (graded, written with one write, summarised, counted). worker/batch_command drives it
// with an in-process engine; the coordinator will drive it with worker groups. A sample's
// random stream is keyed by (seed, problem id, sample index): drivers pass the id as the RNG
// key and a run's first index as its first sample.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/jobs/few_shot.h"
#include "common/jobs/job_input.h"
#include "common/jobs/progress.h"
#include "common/jobs/sample_log.h"
#include "common/jobs/summary.h"
#include "common/tokenizer/tokenizer.h"

namespace dsmath {

struct JobSampling {
  double temperature = 1.0, top_p = 1.0, min_p = 0.0;
  int64_t top_k = 0, max_new_tokens = 256;
  uint64_t seed = 0;
};

struct JobSpec {
  std::string model_dir;  // its fingerprint is part of the recorded settings
  std::string input, output, summary, template_file;
  std::string output_format = "native";  // or "openai"
  JobInputOptions fields;
  bool chat = false;
  std::string cot;  // "", "en", "zh"
  int32_t n = 1;
  JobSampling sampling;
  std::vector<std::string> stop;
};

// Consecutive samples first .. first + count - 1 of one problem, run as one request.
struct SampleRun {
  const JobProblem* problem = nullptr;
  int64_t first = 0, count = 0;
};

// A finished sample as its driver saw it.
struct FinishedSample {
  std::string text;
  std::string finish_reason;  // "stop", "length" or "error"
  std::string stop_string;    // when a stop string ended it
  std::string error;          // with "error"
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double cumulative_logprob = 0;
};

class BatchJob {
 public:
  // Reads the input, checks (or records) the settings, opens and locks the output, rewrites
  // OUT.errors.jsonl with the input's bad lines. Throws Error naming what is wrong.
  BatchJob(const JobSpec& spec, const Tokenizer& tokenizer);

  // What is left to run, in input order, each run at most `max_run` samples.
  std::vector<SampleRun> remaining(int64_t max_run) const;
  std::vector<int32_t> prompt_of(const JobProblem& p) const;
  JobSampling sampling_of(const JobProblem& p) const;
  std::vector<std::string> stop_of(const JobProblem& p) const;

  // Sample `i` of `run` is done: graded, written and counted.
  void finished(const SampleRun& run, int64_t i, const FinishedSample& sample);
  // The whole run was refused (a prompt beyond the context, ...): to the errors file, not done.
  void refused(const SampleRun& run, const std::string& reason);
  void generated_tokens(int64_t n) { counts_.tokens += n; }
  // Between steps: fsync when due, redraw the progress.
  void tick();
  // Final fsync and progress line; returns the summary (also written to spec.summary).
  nlohmann::json finish(double seconds);

  const ProgressCounts& counts() const { return counts_; }
  size_t cut_bytes() const { return log_.cut_bytes(); }
  size_t input_errors() const { return input_.errors.size(); }

 private:
  int64_t n_of(const JobProblem& p) const { return p.n.value_or(spec_.n); }
  void count_existing();
  nlohmann::json line_of(const SampleRun& run, int64_t i, const FinishedSample& s,
                         const std::optional<std::string>& answer,
                         std::optional<bool> correct) const;

  JobSpec spec_;
  const Tokenizer& tokenizer_;
  std::optional<FewShotTemplate> few_shot_;
  JobInput input_;
  SampleLog log_;
  std::ofstream errors_;
  JobSummary summary_;
  Progress progress_;
  ProgressCounts counts_;
  std::unordered_map<std::string, int64_t> unfinished_of_problem_;
  int64_t samples_this_run_ = 0;
};

}  // namespace dsmath
