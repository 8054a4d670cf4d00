#include "common/tokenizer/pretokenizer.h"

#include <array>
#include <functional>

#include "common/core/error.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {
namespace {

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Replaces each split by the pieces `fn` cuts it into; only the first piece of a split that
// began the input still begins it.
void split_each(std::vector<PreSplit>& splits,
                const std::function<std::vector<std::string>(const std::string&)>& fn) {
  std::vector<PreSplit> out;
  out.reserve(splits.size());
  for (const auto& split : splits) {
    bool first = true;
    for (auto& piece : fn(split.text)) {
      if (piece.empty()) continue;
      out.push_back({std::move(piece), split.at_start && first});
      first = false;
    }
  }
  splits = std::move(out);
}

// HF's char-predicate pattern: each matching char is its own match; runs of other chars are
// grouped.
std::vector<PatternSpan> char_spans(std::string_view text, bool (*pred)(char32_t)) {
  if (text.empty()) return {{0, 0, false}};
  std::vector<PatternSpan> spans;
  size_t last = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t len = 0;
    const char32_t c = unicode::decode(text, pos, &len);
    if (pred(c)) {
      if (last < pos) spans.push_back({last, pos, false});
      spans.push_back({pos, pos + len, true});
      last = pos + len;
    }
    pos += len;
  }
  if (last < text.size()) spans.push_back({last, text.size(), false});
  return spans;
}

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    for (const auto& step : steps_) step->pre_tokenize(splits);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    split_each(splits, [this](const std::string& text) {
      auto spans = regex_spans(pattern_, text);
      if (invert_) {
        for (auto& s : spans) s.is_match = !s.is_match;
      }
      return split_by_spans(text, spans, behavior_);
    });
  }

 private:
  Regex pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    split_each(splits, [this](const std::string& text) {
      return split_by_spans(text, char_spans(text, unicode::is_numeric),
                            individual_ ? SplitBehavior::kIsolated : SplitBehavior::kContiguous);
    });
  }

 private:
  bool individual_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), regex_(kGpt2Pattern, where) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    split_each(splits, [this](const std::string& piece) {
      const bool prefix = add_prefix_space_ && piece.front() != ' ';
      std::string text = prefix ? std::string(" ").append(piece) : piece;
      if (!use_regex_) return std::vector<std::string>{text};
      return split_by_spans(text, regex_spans(regex_, text), SplitBehavior::kIsolated);
    });
    for (auto& split : splits) {
      std::string mapped;
      mapped.reserve(split.text.size() * 2);
      for (unsigned char b : split.text) mapped += byte_to_char(b);
      split.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  bool use_regex_;
  Regex regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split,
                        const std::string& where)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        split_(split),
        space_(Regex::literal(" ", where)),
        replacement_regex_(Regex::literal(replacement_, where)) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    std::vector<PreSplit> out;
    for (const auto& split : splits) {
      std::string text = space_.replace_all(split.text, replacement_);
      const bool starts = text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && split.at_start))) {
        text.insert(0, replacement_);
      }
      if (!split_) {
        out.push_back({std::move(text), split.at_start});
        continue;
      }
      bool first = true;
      for (auto& piece : split_by_spans(text, regex_spans(replacement_regex_, text),
                                        SplitBehavior::kMergedWithNext)) {
        out.push_back({std::move(piece), split.at_start && first});
        first = false;
      }
    }
    splits = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Regex space_;
  Regex replacement_regex_;
};

class WhitespacePreTokenizer : public PreTokenizer {
 public:
  explicit WhitespacePreTokenizer(const std::string& where) : regex_(R"(\w+|[^\w\s]+)", where) {}
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    split_each(splits, [this](const std::string& text) {
      auto spans = regex_spans(regex_, text);
      for (auto& s : spans) s.is_match = !s.is_match;  // HF splits on the inverted pattern
      return split_by_spans(text, spans, SplitBehavior::kRemoved);
    });
  }

 private:
  Regex regex_;
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<PreSplit>& splits) const override {
    split_each(splits, [](const std::string& text) {
      return split_by_spans(text, char_spans(text, unicode::is_whitespace),
                            SplitBehavior::kRemoved);
    });
  }
};

PrependScheme parse_prepend_scheme(const Json& config, const std::string& where) {
  if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
    const std::string s = config["prepend_scheme"].get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    fail(where, ".prepend_scheme: unknown value '", s, "'");
  }
  // Older files carry add_prefix_space instead.
  return config.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object() || !config.contains("type"))
    fail(where, ": expected an object with 'type'");
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    const Json& list = config.value("pretokenizers", Json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_pre_tokenizer(list[i], cat(where, ".pretokenizers[", i, "]"));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    if (!config.contains("pattern")) fail(where, ": Split without 'pattern'");
    return std::make_unique<SplitPreTokenizer>(
        make_pattern(config["pattern"], where + ".pattern"),
        parse_split_behavior(config.value("behavior", Json("Isolated")), where + ".behavior"),
        config.value("invert", false));
  }
  if (type == "Digits")
    return std::make_unique<DigitsPreTokenizer>(config.value("individual_digits", false));
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(config.value("add_prefix_space", true),
                                                   config.value("use_regex", true), where);
  }
  if (type == "Metaspace") {
    return std::make_unique<MetaspacePreTokenizer>(
        config.value("replacement", std::string("\u2581")), parse_prepend_scheme(config, where),
        config.value("split", true), where);
  }
  if (type == "Whitespace") return std::make_unique<WhitespacePreTokenizer>(where);
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  fail(where, ": unsupported pre_tokenizer type '", type, "'");
}

namespace {

struct ByteTable {
  std::array<std::string, 256> to_char;
  std::array<int, 512> from_char{};
  ByteTable() {
    from_char.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      const char32_t c =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      unicode::append(to_char[b], c);
      from_char[c] = b;
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

}  // namespace

const std::string& byte_to_char(unsigned char byte) {
  return byte_table().to_char[byte];
}

int char_to_byte(char32_t c) {
  return c < 512 ? byte_table().from_char[c] : -1;
}

}  // namespace dsmath
