// The text of one sample as its tokens arrive, for callers that stream it (the offline CLI,
// the coordinator): incremental detokenization, never half a UTF-8 character, and stop
// strings. The text ends before the earliest stop string. Text that could still turn out to be
// the start of a stop string is held back until it is known not to be, so nothing emitted ever
// has to be taken back.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace dsmath {

class TextStream {
 public:
  // Empty stop strings are not allowed (Error naming the field).
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings,
             bool skip_special_tokens = true);

  // Adds a token; returns the text that is now safe to emit (possibly empty). Once a stop
  // string has matched, returns "" for any further token.
  std::string push(int32_t token);
  // The sample ended: returns the text still held back (after a last stop-string check).
  std::string finish();

  bool stopped() const { return stopped_; }
  const std::string& matched_stop() const { return matched_; }  // when stopped()
  const std::string& text() const { return emitted_; }          // everything emitted so far

 private:
  std::string emit_safe_part(bool final);

  IncrementalDetokenizer detokenizer_;
  std::vector<std::string> stops_;
  std::string pending_;  // decoded but not emitted: may be the start of a stop string
  std::string emitted_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace dsmath
