#include "common/tokenizer/decoder.h"

#include "common/core/error.h"
#include "common/tokenizer/pattern.h"
#include "common/tokenizer/pretokenizer.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {
namespace {

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens, bool lossy) const override {
    for (const auto& step : steps_) step->decode_chain(tokens, lossy);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Maps the GPT-2 printable chars back to bytes; a token with any other char is kept as its
// own bytes, and the whole chain becomes one string (HF: one from_utf8_lossy over all).
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool lossy) const override {
    std::string bytes;
    for (const auto& token : tokens) {
      std::string mapped;
      bool ok = true;
      for (size_t pos = 0; pos < token.size() && ok;) {
        size_t len = 0;
        const int b = char_to_byte(unicode::decode(token, pos, &len));
        ok = b >= 0;
        mapped.push_back(static_cast<char>(b));
        pos += len;
      }
      bytes += ok ? mapped : token;
    }
    tokens.assign(1, lossy ? unicode::to_valid_utf8_lossy(bytes) : bytes);
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && strip_first_)) out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    for (auto& t : tokens) {
      // A non-lossy chain can carry undecoded bytes; only the valid runs between them go
      // to the regex.
      std::string out;
      for (size_t pos = 0; pos < t.size();) {
        const size_t n = unicode::valid_prefix_len(std::string_view(t).substr(pos));
        out += pattern_.replace_all(std::string_view(t).substr(pos, n), content_);
        pos += n;
        if (pos < t.size()) out.push_back(t[pos++]);
      }
      t = std::move(out);
    }
  }

 private:
  Regex pattern_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool lossy) const override {
    std::vector<std::string> out;
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (!lossy || unicode::is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        // HF: when the run of byte tokens is not valid UTF-8, every byte becomes U+FFFD.
        for (size_t i = 0; i < bytes.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
    };
    for (auto& t : tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        value = parse_hex(t[3], t[4]);
      }
      if (value >= 0) {
        bytes.push_back(static_cast<char>(value));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int parse_hex(char hi, char lo) {
    auto digit = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int h = digit(hi), l = digit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

// "BPEDecoder": the end-of-word suffix becomes a space, except in the last token.
class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    if (suffix_.empty()) return;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string with = i + 1 == tokens.size() ? "" : " ";
      std::string out;
      const std::string& t = tokens[i];
      for (size_t pos = 0; pos < t.size();) {
        if (t.compare(pos, suffix_.size(), suffix_) == 0) {
          out += with;
          pos += suffix_.size();
        } else {
          out.push_back(t[pos++]);
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string suffix_;
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one char from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens, bool) const override {
    const size_t n = content_.size();
    for (auto& t : tokens) {
      size_t begin = 0, end = t.size();
      for (size_t i = 0; i < start_ && begin + n <= end && t.compare(begin, n, content_) == 0;
           ++i) {
        begin += n;
      }
      for (size_t i = 0; i < stop_ && end >= begin + n && t.compare(end - n, n, content_) == 0;
           ++i) {
        end -= n;
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object() || !config.contains("type"))
    fail(where, ": expected an object with 'type'");
  const std::string type = config["type"].get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    const Json& list = config.value("decoders", Json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_decoder(list[i], cat(where, ".decoders[", i, "]"));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    bool strip_first = config.value("add_prefix_space", true);
    if (config.contains("prepend_scheme") && config["prepend_scheme"].is_string()) {
      strip_first = config["prepend_scheme"].get<std::string>() != "never";
    }
    return std::make_unique<MetaspaceDecoder>(config.value("replacement", std::string("\u2581")),
                                              strip_first);
  }
  if (type == "Replace") {
    if (!config.contains("pattern") || !config.contains("content")) {
      fail(where, ": Replace needs 'pattern' and 'content'");
    }
    return std::make_unique<ReplaceDecoder>(make_pattern(config["pattern"], where + ".pattern"),
                                            config["content"].get<std::string>());
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "BPEDecoder") {
    return std::make_unique<BpeSuffixDecoder>(config.value("suffix", std::string("</w>")));
  }
  if (type == "Strip") {
    // As HF's (content: char, start and stop: usize): an empty content would match forever, and
    // a count given as 1e19 or -1 has no integer value.
    const std::string content = config.value("content", std::string(" "));
    if (content.empty()) fail(where, ".content: Strip needs a character to strip");
    auto count = [&](const char* key) -> size_t {
      if (!config.contains(key)) return 0;
      const Json& v = config[key];
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        fail(where, ".", key, ": expected a non-negative integer, got ", v.dump());
      return v.get<size_t>();
    };
    return std::make_unique<StripDecoder>(content, count("start"), count("stop"));
  }
  fail(where, ": unsupported decoder type '", type, "'");
}

}  // namespace dsmath
