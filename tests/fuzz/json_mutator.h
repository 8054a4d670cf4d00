// Structure-aware mutation for the targets whose input is JSON (tokenizer.json, safetensors
// headers, JSONL lines). Byte mutations rarely keep JSON valid, so a parser's type and range
// checks are seldom reached; this one parses the text, changes one node of the tree (its type,
// a number to an edge value, a string to a keyword, a key removed or copied in, a subtree copied
// over another) and writes the tree back.
//
// A target uses it from LLVMFuzzerCustomMutator (libFuzzer calls that instead of its own
// mutations; replay_main.cpp does the same), falling back to LLVMFuzzerMutate (libFuzzer's byte
// mutations; replay_main.cpp has its own) half the time or when the text is not JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace dsmath::fuzz {

using Json = nlohmann::json;

class JsonMutator {
 public:
  explicit JsonMutator(unsigned seed) : rng_(seed) {}

  size_t below(size_t n) { return n == 0 ? 0 : size_t(rng_() % n); }

  // Mutates `text` in place when it is JSON; false when it is not.
  bool mutate_text(std::string& text) {
    Json root = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) return false;
    mutate(root);
    text = root.dump(-1, ' ', false, Json::error_handler_t::replace);
    return true;
  }

  void mutate(Json& root) {
    nodes_.clear();
    strings_.clear();
    keys_.clear();
    collect(root);
    Json& n = *nodes_[below(nodes_.size())];
    switch (below(14)) {
      case 0:
        n = nullptr;
        break;
      case 1:
        n = below(2) == 0;
        break;
      case 2: {
        static const int64_t kInts[] = {-1,         0,           1,          2,          255,
                                        256,        65535,       2147483647, 2147483648, 4294967295,
                                        4294967296, -2147483649, INT64_MAX,  INT64_MIN};
        n = kInts[below(std::size(kInts))];
        break;
      }
      case 3:
        n = UINT64_MAX - below(2);
        break;
      case 4: {
        static const double kFloats[] = {0.5, -0.0, 2.5, 1e19, -1e19, 1e300, -1e300, 3e-310};
        n = kFloats[below(std::size(kFloats))];
        break;
      }
      case 5: {
        static const char* kStrings[] = {"",
                                         "BPE",
                                         "Sequence",
                                         "ByteLevel",
                                         "Metaspace",
                                         "Split",
                                         "Regex",
                                         "String",
                                         "<s>",
                                         "</s>",
                                         "\xE2\x96\x81",
                                         "(",
                                         "[",
                                         "\\",
                                         "F32",
                                         "BF16",
                                         "POST",
                                         "/v1/completions",
                                         "/v1/chat/completions",
                                         "user",
                                         "0",
                                         "-1",
                                         "\xF0\x9F\x98\x80"};
        n = kStrings[below(std::size(kStrings))];
        break;
      }
      case 6:
        if (!strings_.empty()) n = *strings_[below(strings_.size())];
        break;
      case 7:
        n = below(2) == 0 ? Json::array() : Json::object();
        break;
      case 8:
        n = below(2) == 0 ? Json::array({n}) : Json{{"type", n}};
        break;
      case 9:  // remove a key or an element
        if (n.is_object() && !n.empty()) {
          auto it = n.begin();
          std::advance(it, long(below(n.size())));
          n.erase(it);
        } else if (n.is_array() && !n.empty()) {
          n.erase(n.begin() + long(below(n.size())));
        }
        break;
      case 10:  // add a key seen elsewhere, or duplicate an element
        if (n.is_object() && !keys_.empty()) {
          n[*keys_[below(keys_.size())]] = *nodes_[below(nodes_.size())];
        } else if (n.is_array() && !n.empty()) {
          const Json copy = n[below(n.size())];
          n.push_back(copy);
        }
        break;
      default: {  // another subtree in its place
        const Json copy = *nodes_[below(nodes_.size())];
        n = copy;
        break;
      }
    }
  }

 private:
  // Every node, but at most 16 children of a large container (vocabularies have 100k).
  void collect(Json& n) {
    nodes_.push_back(&n);
    if (n.is_string()) strings_.push_back(&n.get_ref<const std::string&>());
    if (!n.is_structured()) return;
    const size_t size = n.size();
    size_t i = 0;
    for (auto it = n.begin(); it != n.end(); ++it, ++i) {
      if (size > 16 && below(size) >= 16) continue;
      if (n.is_object()) keys_.push_back(&it.key());
      collect(*it);
    }
  }

  std::mt19937 rng_;
  std::vector<Json*> nodes_;
  std::vector<const std::string*> strings_;
  std::vector<const std::string*> keys_;
};

// Copies `text` into the fuzzer's buffer; 0 when it does not fit.
inline size_t put(const std::string& text, uint8_t* data, size_t max_size) {
  if (text.size() > max_size) return 0;
  std::memcpy(data, text.data(), text.size());
  return text.size();
}

// Input split at `separator` (NUL, or newline for JSONL): one JSON part mutated as a tree, or,
// half the time (and when no part is JSON), the bytes as libFuzzer mutates them.
inline size_t mutate_json_parts(uint8_t* data, size_t size, size_t max_size, unsigned seed,
                                char separator) {
  JsonMutator m(seed);
  if (m.below(2) == 0) {
    std::vector<std::string> parts(1);
    for (size_t i = 0; i < size; ++i) {
      if (char(data[i]) == separator)
        parts.emplace_back();
      else
        parts.back() += char(data[i]);
    }
    for (int attempt = 0; attempt < 4; ++attempt) {
      std::string& part = parts[m.below(parts.size())];
      if (!m.mutate_text(part)) continue;
      std::string text;
      for (size_t i = 0; i < parts.size(); ++i) {
        if (i > 0) text += separator;
        text += parts[i];
      }
      if (const size_t n = put(text, data, max_size)) return n;
    }
  }
  return LLVMFuzzerMutate(data, size, max_size);
}

}  // namespace dsmath::fuzz
