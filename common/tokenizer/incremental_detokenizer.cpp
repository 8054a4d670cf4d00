// vLLM-style incremental detokenization: decode a short window of ids (so decoders that treat
// the first token specially, like Metaspace and Strip, see context) and emit what the newest
// ids added, holding back bytes of a character that is not complete yet.
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string prefix = tokenizer_.decode_bytes(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tokenizer_.decode_bytes(all.subspan(prefix_offset_), skip_special_);
  if (text.size() <= prefix.size() || text.compare(0, prefix.size(), prefix) != 0) return {};
  const std::string_view added = std::string_view(text).substr(prefix.size());
  if (unicode::complete_prefix_len(added) != added.size()) return {};  // wait for the rest
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  // Bytes that can never become a character (a stray continuation byte) are final: show
  // them as U+FFFD, as decode() does.
  return unicode::to_valid_utf8_lossy(added);
}

std::string IncrementalDetokenizer::flush() {
  const std::span<const int32_t> all(ids_);
  const std::string prefix = tokenizer_.decode_bytes(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string text = tokenizer_.decode_bytes(all.subspan(prefix_offset_), skip_special_);
  prefix_offset_ = read_offset_ = ids_.size();
  if (text.size() <= prefix.size() || text.compare(0, prefix.size(), prefix) != 0) return {};
  return unicode::to_valid_utf8_lossy(std::string_view(text).substr(prefix.size()));
}

}  // namespace dsmath
