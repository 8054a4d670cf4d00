// The input of a batch job: JSONL, one problem per line, in either of two shapes.
//   native:  {"id": ..., "question" | "problem" | "prompt": ..., "answer" | "solution": ...}
//            or "messages": [{"role", "content"}...] instead of a prompt; field names can be
//            set (--id-field, --prompt-field, --answer-field). Without an id field the line
//            number is the id. References go through reference_answer (GSM8K "####", MATH
//            \boxed).
//   OpenAI batch (what vLLM's run-batch reads): {"custom_id", "method": "POST", "url":
//            "/v1/completions" | "/v1/chat/completions", "body": {"prompt" | "messages",
//            "max_tokens", "temperature", "top_p", "n", "seed", "stop"}}; custom_id is the id.
// A line that does not parse or lacks its prompt is an InputError (the job goes on without
// it); an unreadable file or a duplicate id throws Error naming the file and line.
#pragma once

#include <cstdint>
#include <filesystem>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "common/tokenizer/chat_template.h"

namespace dsmath {

struct JobInputOptions {
  std::string id_field;      // "": "id", else the line number
  std::string prompt_field;  // "": the first of "question", "problem", "prompt"
  std::string answer_field;  // "": the first of "answer", "solution"
};

struct JobProblem {
  std::string id;
  size_t line = 0;  // 1-based, in the input file
  std::string prompt;
  std::vector<ChatMessage> messages;  // instead of prompt
  std::optional<std::string> reference;
  // OpenAI batch lines only: the request's own settings, over the job's flags.
  bool openai = false;
  bool chat_endpoint = false;  // /v1/chat/completions
  std::optional<int64_t> max_tokens, n;
  std::optional<double> temperature, top_p;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
};

struct InputError {
  size_t line;
  std::string reason;
};

struct JobInput {
  std::vector<JobProblem> problems;
  std::vector<InputError> errors;
};

JobInput read_job_input(const std::filesystem::path& path, const JobInputOptions& options);
// The same from a stream; `name` names it in errors.
JobInput read_job_input(std::istream& in, const std::string& name, const JobInputOptions& options);

}  // namespace dsmath
