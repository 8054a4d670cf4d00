// PCRE2 (UTF + UCP) regular expressions with the matching rules of the Oniguruma engine that
// Hugging Face `tokenizers` uses: Ruby syntax, so `^`/`$` are line anchors, and an empty match
// right after the previous match is skipped.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsmath {

class Regex {
 public:
  // `where` names the file and field for error messages.
  Regex(std::string_view pattern, const std::string& where);
  static Regex literal(std::string_view text, const std::string& where);

  // All non-overlapping matches as byte ranges [begin, end). `text` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  std::string replace_all(std::string_view text, std::string_view with) const;

 private:
  struct Code;
  std::shared_ptr<Code> code_;
};

}  // namespace dsmath
