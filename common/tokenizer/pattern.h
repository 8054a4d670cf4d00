// The "pattern" objects of tokenizer.json ({"String": ...} or {"Regex": ...}) and the
// split-by-pattern machinery that Split, Digits and Metaspace share.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/core/json_file.h"
#include "common/tokenizer/regex.h"

namespace dsmath {

Regex make_pattern(const Json& config, const std::string& where);

// A covering of a string by ranges, each marked as a match of the pattern or not.
struct PatternSpan {
  size_t begin;
  size_t end;
  bool is_match;
};
std::vector<PatternSpan> regex_spans(const Regex& regex, std::string_view text);

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(const Json& value, const std::string& where);

// Applies `behavior` to `spans` (HF NormalizedString::split) and returns the non-empty pieces.
std::vector<std::string> split_by_spans(std::string_view text,
                                        const std::vector<PatternSpan>& spans,
                                        SplitBehavior behavior);

}  // namespace dsmath
