#include "common/text/text_stream.h"

#include <algorithm>

#include "common/core/error.h"

namespace dsmath {

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
                       bool skip_special_tokens)
    : detokenizer_(tokenizer, skip_special_tokens), stops_(std::move(stop_strings)) {
  for (const std::string& s : stops_) DSMATH_CHECK(!s.empty(), "stop strings must not be empty");
}

std::string TextStream::push(int32_t token) {
  if (stopped_) return {};
  pending_ += detokenizer_.push(token);
  return emit_safe_part(/*final=*/false);
}

std::string TextStream::finish() {
  if (stopped_) return {};
  pending_ += detokenizer_.flush();
  return emit_safe_part(/*final=*/true);
}

// A match always lies inside pending_: had it begun in emitted text, that text would have been
// a prefix of the stop string, and so held back.
std::string TextStream::emit_safe_part(bool final) {
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at != std::string::npos && (cut == std::string::npos || at < cut)) {
      cut = at;
      matched_ = s;
    }
  }
  size_t emit = pending_.size();
  if (cut != std::string::npos) {
    stopped_ = true;
    emit = cut;
  } else if (!final) {
    // Hold back the longest tail that begins some stop string. It starts where a stop string
    // starts, on a character boundary, so what is emitted is whole characters.
    size_t hold = 0;
    for (const std::string& s : stops_)
      for (size_t k = std::min(s.size() - 1, pending_.size()); k > hold; --k)
        if (pending_.compare(pending_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    emit = pending_.size() - hold;
  }
  std::string out = pending_.substr(0, emit);
  pending_.erase(0, stopped_ ? pending_.size() : emit);
  emitted_ += out;
  return out;
}

}  // namespace dsmath
