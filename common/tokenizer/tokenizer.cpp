#include "common/tokenizer/tokenizer.h"

#include "common/core/error.h"
#include "common/tokenizer/tokenizer_impl.h"

namespace dsmath {

std::optional<std::string> config_token_text(const Json& config, const char* key,
                                             std::optional<std::string> fallback) {
  if (!config.is_object() || !config.contains(key)) return fallback;
  const Json& v = config[key];
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  fail("tokenizer_config.json: '", key, "' is neither a string nor an AddedToken object");
}

Tokenizer Tokenizer::load(const std::filesystem::path& dir) {
  const auto json_file = dir / "tokenizer.json";
  const auto model_file = dir / "tokenizer.model";
  const auto config_file = dir / "tokenizer_config.json";
  Json config;  // null when absent
  if (std::filesystem::exists(config_file)) {
    config = read_json_file(config_file);
    if (!config.is_object()) fail(config_file.string(), ": expected a JSON object");
  }
  if (std::filesystem::exists(json_file))
    return Tokenizer(load_hf_tokenizer(read_json_file(json_file), json_file.string(), config));
  if (std::filesystem::exists(model_file)) {
    return Tokenizer(load_sentencepiece_tokenizer(model_file, config));
  }
  fail(dir.string(), ": no tokenizer.json or tokenizer.model");
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json) {
  auto parse = [](std::string_view text, const char* name) {
    try {
      return Json::parse(text);
    } catch (const Json::exception& e) {
      fail(name, ": invalid JSON: ", e.what());
    }
  };
  Json config;  // null when absent
  if (!config_json.empty()) {
    config = parse(config_json, "tokenizer_config.json");
    if (!config.is_object()) fail("tokenizer_config.json: expected a JSON object");
  }
  return Tokenizer(
      load_hf_tokenizer(parse(tokenizer_json, "tokenizer.json"), "tokenizer.json", config));
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens, /*lossy=*/true);
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens, /*lossy=*/false);
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos_id();
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos_id();
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  auto token = impl_->id_to_token(id);
  if (!token) fail("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
  return *token;
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_->is_special(id);
}
int32_t Tokenizer::vocab_size() const {
  return impl_->vocab_size();
}

}  // namespace dsmath
