// The two tokenizer back ends behind dsmath::Tokenizer: tokenizer.json (HF `tokenizers`
// semantics) and tokenizer.model (libsentencepiece).
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/core/json_file.h"
#include "common/tokenizer/tokenizer.h"

namespace dsmath {

class Tokenizer::Impl {
 public:
  virtual ~Impl() = default;
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // lossy: invalid UTF-8 becomes U+FFFD as HF decode does; otherwise bytes are kept raw.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens,
                             bool lossy) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
};

// `json` is the parsed tokenizer.json (`name` names it in errors); `config` is
// tokenizer_config.json, or null when the directory has none.
std::shared_ptr<const Tokenizer::Impl> load_hf_tokenizer(const Json& json, const std::string& name,
                                                         const Json& config);
std::shared_ptr<const Tokenizer::Impl> load_sentencepiece_tokenizer(
    const std::filesystem::path& file, const Json& config);

// The text of a special token in tokenizer_config.json: a string, an AddedToken object
// ({"content": ...}) or null/absent (then `fallback`).
std::optional<std::string> config_token_text(const Json& config, const char* key,
                                             std::optional<std::string> fallback);

}  // namespace dsmath
