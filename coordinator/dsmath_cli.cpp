// `dsmath`: the project's command-line front end.
//   dsmath tokenize   --model DIR [--no-special-tokens]   stdin: JSON strings, stdout: id arrays
//   dsmath detokenize --model DIR [--skip-special-tokens] stdin: id arrays, stdout: JSON strings
// One input line gives one output line; errors name the flag, file or stdin line at fault.
#include <CLI/CLI.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "common/core/error.h"
#include "common/tokenizer/tokenizer.h"

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*tokenize) return run_tokenize(tokenize_model, !no_special);
    return run_detokenize(detokenize_model, skip_special);
  } catch (const std::exception& e) {
    std::cerr << "dsmath: " << e.what() << '\n';
    return 1;
  }
}
