// The tokenizer of a checkpoint directory: tokenizer.json (+ tokenizer_config.json) driven
// byte-level / Metaspace BPE with exactly Hugging Face `tokenizers` semantics, or
// tokenizer.model through libsentencepiece when there is no tokenizer.json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsmath {

// Copies share the loaded tables; every const method may be called from many threads.
class Tokenizer {
 public:
  // Loads <dir>/tokenizer.json (preferred) or <dir>/tokenizer.model, plus
  // <dir>/tokenizer_config.json when present (add_bos_token / add_eos_token).
  static Tokenizer load(const std::filesystem::path& dir);
  // The same from the text of a tokenizer.json and, optionally, of a tokenizer_config.json
  // ("" when there is none). Throws Error naming "tokenizer.json" or "tokenizer_config.json".
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {});

  // add_special_tokens: apply the post-processor / add_bos_token / add_eos_token as HF's
  // LlamaTokenizerFast does. Special-token text inside `text` is always matched. Throws
  // Error when `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  // Exactly HF decode: bytes that do not form valid UTF-8 (ids ending mid-character, stray
  // byte tokens) become U+FFFD where HF puts them, so the result is always valid UTF-8.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;
  // Like decode, but incomplete or invalid UTF-8 bytes are returned as they are.
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // the raw vocabulary string; throws if unknown
  bool is_special(int32_t id) const;
  int32_t vocab_size() const;  // largest id + 1, added tokens included

  class Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);

 private:
  std::shared_ptr<const Impl> impl_;
};

// Streams text token by token and never emits half a UTF-8 character: bytes of an
// incomplete character are held back until the token that completes it arrives.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true);
  // Returns the newly completed text (possibly empty).
  std::string push(int32_t id);
  // Returns whatever is held back (invalid trailing bytes become U+FFFD, like HF decode).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // tokens before this are already emitted
  size_t read_offset_ = 0;
};

}  // namespace dsmath
