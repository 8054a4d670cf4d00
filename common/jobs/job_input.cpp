#include "common/jobs/job_input.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <unordered_map>

#include "common/core/error.h"
#include "common/jobs/answer.h"

namespace dsmath {
namespace {

using Json = nlohmann::json;

// A field's text: strings as they are, numbers as JSON writes them.
std::optional<std::string> text_of(const Json& line, const std::string& field) {
  auto it = line.find(field);
  if (it == line.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return std::nullopt;
}

std::vector<ChatMessage> messages_of(const Json& messages) {
  if (!messages.is_array() || messages.empty()) fail("\"messages\" must be a non-empty array");
  std::vector<ChatMessage> out;
  for (const Json& m : messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      fail("each message needs string \"role\" and \"content\"");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

// An integer field of the request body. JSON allows 1e300 or 2.5 there, and integers beyond
// int64: converting those would be undefined or silently change the value, so they are refused.
// A seed may be any 64-bit integer (a negative one is taken modulo 2^64, as before).
template <typename Int>
Int body_int(const Json& body, const char* field) {
  const Json& v = body[field];
  bool fits = v.is_number_integer();
  if constexpr (std::is_signed_v<Int>)
    fits = fits && !(v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX));
  if (!fits) fail("\"body.", field, "\" must be a 64-bit integer, got ", v.dump());
  return v.get<Int>();
}

JobProblem openai_line(const Json& j) {
  JobProblem p;
  p.openai = true;
  if (!j["custom_id"].is_string() || j["custom_id"].get<std::string>().empty())
    fail("\"custom_id\" must be a non-empty string");
  p.id = j["custom_id"].get<std::string>();
  if (j.contains("method") && j["method"] != "POST") fail("\"method\" must be \"POST\"");
  const std::string url = j.value("url", "");
  if (url != "/v1/completions" && url != "/v1/chat/completions")
    fail("\"url\" must be /v1/completions or /v1/chat/completions, got \"", url, "\"");
  p.chat_endpoint = url == "/v1/chat/completions";
  const Json& body = j["body"];
  if (!body.is_object()) fail("\"body\" must be an object");
  if (p.chat_endpoint) {
    p.messages = messages_of(body.value("messages", Json()));
  } else {
    if (!body.contains("prompt") || !body["prompt"].is_string() ||
        body["prompt"].get<std::string>().empty())
      fail("\"body.prompt\" must be a non-empty string");
    p.prompt = body["prompt"].get<std::string>();
  }
  if (body.contains("max_tokens")) p.max_tokens = body_int<int64_t>(body, "max_tokens");
  if (body.contains("n")) p.n = body_int<int64_t>(body, "n");
  if (body.contains("temperature")) p.temperature = body["temperature"].get<double>();
  if (body.contains("top_p")) p.top_p = body["top_p"].get<double>();
  if (body.contains("seed")) p.seed = body_int<uint64_t>(body, "seed");
  if (body.contains("stop")) {
    const Json& stop = body["stop"];
    if (stop.is_string())
      p.stop.push_back(stop.get<std::string>());
    else if (stop.is_array())
      p.stop = stop.get<std::vector<std::string>>();
    else if (!stop.is_null())
      fail("\"body.stop\" must be a string or an array of strings");
  }
  return p;
}

JobProblem native_line(const Json& j, size_t line_number, const JobInputOptions& o) {
  JobProblem p;
  if (!o.id_field.empty()) {
    auto id = text_of(j, o.id_field);
    if (!id || id->empty()) fail("no id field \"", o.id_field, "\"");
    p.id = *id;
  } else {
    const auto id = text_of(j, "id");
    // An empty id would key every sample of the problem by "" (its random stream, its lines).
    if (id && id->empty()) fail("\"id\" is empty");
    p.id = id.value_or(std::to_string(line_number));
  }
  std::vector<std::string> prompt_fields = {o.prompt_field};
  if (o.prompt_field.empty()) prompt_fields = {"question", "problem", "prompt"};
  for (const std::string& f : prompt_fields)
    if (auto text = text_of(j, f); text && !text->empty()) {
      p.prompt = *text;
      break;
    }
  if (p.prompt.empty()) {
    if (j.contains("messages") && o.prompt_field.empty()) {
      p.messages = messages_of(j["messages"]);
    } else {
      fail("no prompt: expected a non-empty ",
           o.prompt_field.empty() ? "\"question\", \"problem\", \"prompt\" or \"messages\""
                                  : "\"" + o.prompt_field + "\"",
           " field");
    }
  }
  std::vector<std::string> answer_fields = {o.answer_field};
  if (o.answer_field.empty()) answer_fields = {"answer", "solution"};
  for (const std::string& f : answer_fields)
    if (auto text = text_of(j, f)) {
      p.reference = reference_answer(*text);
      break;
    }
  return p;
}

}  // namespace

JobInput read_job_input(const std::filesystem::path& path, const JobInputOptions& o) {
  std::ifstream in(path);
  DSMATH_CHECK(in, "cannot read the input ", path.string());
  return read_job_input(in, path.string(), o);
}

JobInput read_job_input(std::istream& in, const std::string& name, const JobInputOptions& o) {
  JobInput input;
  std::unordered_map<std::string, size_t> seen;  // id -> line
  std::string text;
  for (size_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines
    JobProblem p;
    try {
      const Json j = Json::parse(text);
      if (!j.is_object()) fail("not a JSON object");
      p = j.contains("custom_id") && j.contains("body") ? openai_line(j) : native_line(j, line, o);
    } catch (const Json::exception& e) {
      input.errors.push_back({line, cat("invalid JSON: ", e.what())});
      continue;
    } catch (const Error& e) {
      input.errors.push_back({line, e.what()});
      continue;
    }
    p.line = line;
    const auto [it, fresh] = seen.emplace(p.id, line);
    DSMATH_CHECK(fresh, name, ":", line, ": id \"", p.id, "\" is used by line ", it->second,
                 " already; ids must be unique");
    input.problems.push_back(std::move(p));
  }
  DSMATH_CHECK(!in.bad(), "cannot read the input ", name);
  return input;
}

}  // namespace dsmath
