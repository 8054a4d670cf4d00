#include "common/tokenizer/pattern.h"

#include "common/core/error.h"

namespace dsmath {

Regex make_pattern(const Json& config, const std::string& where) {
  if (config.is_object() && config.contains("Regex") && config["Regex"].is_string()) {
    return Regex(config["Regex"].get<std::string>(), where + ".Regex");
  }
  if (config.is_object() && config.contains("String") && config["String"].is_string()) {
    return Regex::literal(config["String"].get<std::string>(), where + ".String");
  }
  fail(where, ": expected {\"String\": ...} or {\"Regex\": ...}");
}

std::vector<PatternSpan> regex_spans(const Regex& regex, std::string_view text) {
  std::vector<PatternSpan> spans;
  if (text.empty()) return {{0, 0, false}};
  size_t prev = 0;
  for (auto [b, e] : regex.find_all(text)) {
    if (prev != b) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({prev, text.size(), false});
  return spans;
}

SplitBehavior parse_split_behavior(const Json& value, const std::string& where) {
  const std::string name = value.is_string() ? value.get<std::string>() : "";
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail(where, ": unknown split behavior ", value.dump());
}

std::vector<std::string> split_by_spans(std::string_view text,
                                        const std::vector<PatternSpan>& spans,
                                        SplitBehavior behavior) {
  struct Range {
    size_t begin, end;
    bool remove;
  };
  std::vector<Range> ranges;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& s : spans) ranges.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const auto& s : spans) ranges.push_back({s.begin, s.end, s.is_match});
      break;
    case SplitBehavior::kContiguous:
      for (const auto& s : spans) {
        if (s.is_match == previous_match && !ranges.empty()) {
          ranges.back().end = s.end;
        } else {
          ranges.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !ranges.empty()) {
          ranges.back().end = s.end;
        } else {
          ranges.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !ranges.empty()) {
          ranges.back().begin = it->begin;
        } else {
          ranges.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(ranges.begin(), ranges.end());
      break;
  }
  std::vector<std::string> out;
  for (const auto& r : ranges) {
    if (!r.remove && r.end > r.begin) out.emplace_back(text.substr(r.begin, r.end - r.begin));
  }
  return out;
}

}  // namespace dsmath
