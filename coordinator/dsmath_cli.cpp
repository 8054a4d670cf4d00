// `dsmath`: the project's command-line front end.
//   dsmath tokenize   --model DIR [--no-special-tokens]   stdin: JSON strings, stdout: id arrays
//   dsmath detokenize --model DIR [--skip-special-tokens] stdin: id arrays, stdout: JSON strings
//   dsmath generate [--server ADDR] [--chat] [--cot] [sampling flags] [--format text|json] PROMPT
//   dsmath chat [--server ADDR] [--cot] [sampling flags]      one user turn per stdin line
//   dsmath info [--server ADDR]                               the served model, limits, groups
//   dsmath health [--server ADDR] [--service NAME]            exit 0 only when SERVING
//   dsmath grade --input F [--text-field F] [--answer-field F] [--summary FILE]
//   dsmath batch submit --input IN --output OUT [flags] | status JOB | wait JOB | cancel JOB | list
// tokenize / detokenize: one input line gives one output line; errors name the flag, file or
// stdin line at fault. The others talk to a dsmath-coordinator (client_commands.h).
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/core/error.h"
#include "common/tokenizer/tokenizer.h"
#include "coordinator/client_commands.h"
#include "coordinator/grade_command.h"

namespace {

using Json = nlohmann::json;

Json parse_line(const std::string& line, size_t line_number) {
  try {
    return Json::parse(line);
  } catch (const Json::exception& e) {
    dsmath::fail("stdin line ", line_number, ": invalid JSON: ", e.what());
  }
}

int run_tokenize(const std::string& model, bool add_special_tokens) {
  const auto tokenizer = dsmath::Tokenizer::load(model);
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    const Json value = parse_line(line, n);
    if (!value.is_string()) dsmath::fail("stdin line ", n, ": expected a JSON string");
    std::vector<int32_t> ids;
    try {
      ids = tokenizer.encode(value.get<std::string>(), add_special_tokens);
    } catch (const dsmath::Error& e) {
      dsmath::fail("stdin line ", n, ": ", e.what());
    }
    std::cout << Json(ids).dump() << '\n';
  }
  std::cout.flush();
  return 0;
}

int run_detokenize(const std::string& model, bool skip_special_tokens) {
  const auto tokenizer = dsmath::Tokenizer::load(model);
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    const Json value = parse_line(line, n);
    if (!value.is_array()) dsmath::fail("stdin line ", n, ": expected a JSON array of token ids");
    std::vector<int32_t> ids;
    for (const auto& id : value) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= tokenizer.vocab_size()) {
        dsmath::fail("stdin line ", n, ": ", id.dump(), " is not a token id (vocabulary size ",
                     tokenizer.vocab_size(), ")");
      }
      ids.push_back(id.get<int32_t>());
    }
    std::cout << Json(tokenizer.decode(ids, skip_special_tokens)).dump() << '\n';
  }
  std::cout.flush();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dsmath: DeepSeekMath / LLaMA serving tools"};
  app.require_subcommand(1);

  std::string tokenize_model;
  bool no_special = false;
  auto* tokenize = app.add_subcommand("tokenize", "stdin lines (JSON strings) -> token id arrays");
  tokenize->add_option("--model", tokenize_model, "checkpoint directory")->required();
  tokenize->add_flag("--no-special-tokens", no_special, "do not add BOS/EOS");

  std::string detokenize_model;
  bool skip_special = false;
  auto* detokenize = app.add_subcommand("detokenize", "stdin lines (id arrays) -> JSON strings");
  detokenize->add_option("--model", detokenize_model, "checkpoint directory")->required();
  detokenize->add_flag("--skip-special-tokens", skip_special, "leave special tokens out");

  auto* generate = app.add_subcommand("generate", "Generate from a prompt through a coordinator");
  dsmath::GenerateCommand generate_command(*generate, /*interactive=*/false);
  auto* chat = app.add_subcommand("chat", "Talk with the model through a coordinator");
  dsmath::GenerateCommand chat_command(*chat, /*interactive=*/true);
  dsmath::ClientOptions client;
  auto* info = app.add_subcommand("info", "The served model, limits and worker groups (JSON)");
  dsmath::add_client_flags(*info, client);
  std::string service = "dsmath.v1.Generation";
  auto* health = app.add_subcommand("health", "Health check: prints SERVING or NOT_SERVING");
  dsmath::add_client_flags(*health, client);
  health->add_option("--service", service, "\"\" = the server is up")->capture_default_str();

  auto* batch = app.add_subcommand("batch", "Batch jobs run by a coordinator");
  dsmath::BatchCommands batch_commands(*batch);
  dsmath::GradeOptions grade_options;
  auto* grade = app.add_subcommand(
      "grade", "Grade existing texts: each JSONL line back with extracted_answer and correct");
  grade->add_option("--input", grade_options.input, "JSONL with a text and a reference answer")
      ->required();
  grade->add_option("--text-field", grade_options.text_field)->capture_default_str();
  grade
      ->add_option("--answer-field", grade_options.answer_field,
                   "Reference: a GSM8K answer (####), a MATH solution (\\boxed) or the answer")
      ->capture_default_str();
  grade
      ->add_option("--id-field", grade_options.id_field,
                   "Lines with the same id are samples of one problem (maj@k, pass@k)")
      ->capture_default_str();
  grade->add_option("--summary", grade_options.summary, "Write the summary JSON here");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*tokenize) return run_tokenize(tokenize_model, !no_special);
    if (*generate) return generate_command.run();
    if (*chat) return chat_command.run();
    if (*info) return dsmath::run_info(client);
    if (*health) return dsmath::run_health(client, service);
    if (*grade) return dsmath::run_grade(grade_options);
    if (*batch) return batch_commands.run();
    return run_detokenize(detokenize_model, skip_special);
  } catch (const std::exception& e) {
    std::cerr << "dsmath: " << e.what() << '\n';
    return 1;
  }
}
