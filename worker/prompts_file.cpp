#include "worker/prompts_file.h"

#include <fstream>
#include <set>

#include "common/core/error.h"

namespace dsmath {

namespace {

// Reads field `name` of `j` into `out` when present; a wrong type is an error naming it.
template <typename T>
void read_field(const nlohmann::json& j, const char* name, T& out, const std::string& where) {
  const auto it = j.find(name);
  if (it == j.end()) return;
  try {
    out = it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(where, ": field \"", name, "\" has the wrong type (", it->type_name(), ")");
  }
}

PromptLine parse_line(const nlohmann::json& j, const PromptLine& defaults,
                      const std::string& where) {
  PromptLine line = defaults;
  if (j.is_string()) {
    line.prompt = j.get<std::string>();
    return line;
  }
  if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
    fail(where, ": expected a JSON string or an object with a string \"prompt\"");
  static const std::set<std::string> known = {"id",    "prompt", "max_new_tokens", "temperature",
                                              "top_p", "top_k",  "min_p",          "seed",
                                              "n",     "stop"};
  for (const auto& [field, value] : j.items())
    DSMATH_CHECK(known.count(field), where, ": unknown field \"", field, "\" (known: id, prompt, ",
                 "max_new_tokens, temperature, top_p, top_k, min_p, seed, n, stop)");
  line.prompt = j["prompt"].get<std::string>();
  SamplingParams& p = line.params;
  read_field(j, "max_new_tokens", p.max_new_tokens, where);
  read_field(j, "temperature", p.temperature, where);
  read_field(j, "top_p", p.top_p, where);
  read_field(j, "top_k", p.top_k, where);
  read_field(j, "min_p", p.min_p, where);
  read_field(j, "seed", p.seed, where);
  read_field(j, "n", line.n, where);
  if (j.contains("stop")) {
    line.stop.clear();
    if (j["stop"].is_string()) {
      line.stop.push_back(j["stop"].get<std::string>());
    } else {
      read_field(j, "stop", line.stop, where);
    }
  }
  if (j.contains("id")) {
    line.id = j["id"];
    DSMATH_CHECK(line.id.is_string() || line.id.is_number_integer(), where,
                 ": field \"id\" must be a string or an integer");
    line.key = line.id.is_string() ? line.id.get<std::string>() : line.id.dump();
    DSMATH_CHECK(!line.key.empty(), where, ": field \"id\" is empty");
  }
  return line;
}

}  // namespace

void PromptLine::validate() const {
  params.validate();
  DSMATH_CHECK(n >= 1, "n must be at least 1, got ", n);
  for (const std::string& s : stop) DSMATH_CHECK(!s.empty(), "stop strings must not be empty");
}

std::vector<PromptLine> read_prompts_file(const std::string& path, const PromptLine& defaults) {
  std::ifstream in(path);
  if (!in) fail("--prompts-file: cannot open ", path);
  std::vector<PromptLine> lines;
  std::set<std::string> keys;
  std::string text;
  for (int lineno = 1; std::getline(in, text); ++lineno) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = cat(path, ":", lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": invalid JSON: ", e.what());
    }
    PromptLine line = parse_line(j, defaults, where);
    if (line.id.is_null()) line.key = std::to_string(lineno);
    DSMATH_CHECK(keys.insert(line.key).second, where, ": id \"", line.key,
                 "\" is used by an earlier line (ids and line numbers key the samples)");
    try {
      line.validate();
    } catch (const Error& e) {
      fail(where, ": ", e.what());
    }
    lines.push_back(std::move(line));
  }
  DSMATH_CHECK(!lines.empty(), "--prompts-file: ", path, " holds no prompts");
  return lines;
}

}  // namespace dsmath
