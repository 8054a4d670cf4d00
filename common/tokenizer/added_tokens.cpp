#include "common/tokenizer/added_tokens.h"

#include "common/core/error.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {

AddedToken parse_added_token(const Json& config, const std::string& where) {
  if (!config.is_object() || !config.contains("content") || !config["content"].is_string()) {
    fail(where, ": expected an object with a string 'content'");
  }
  AddedToken t;
  t.content = config["content"].get<std::string>();
  if (config.contains("id")) t.id = parse_token_id(config["id"], where + ".id");
  t.special = config.value("special", false);
  t.lstrip = config.value("lstrip", false);
  t.rstrip = config.value("rstrip", false);
  t.single_word = config.value("single_word", false);
  t.normalized = config.value("normalized", !t.special);
  return t;
}

void AddedVocabulary::Trie::insert(std::string_view pattern, size_t token_index) {
  uint32_t node = 0;
  for (unsigned char c : pattern) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | c;
    auto it = edges_.find(key);
    if (it == edges_.end()) {
      nodes_.push_back(Node{});
      it = edges_.emplace(key, static_cast<uint32_t>(nodes_.size() - 1)).first;
    }
    node = it->second;
  }
  // aho-corasick keeps the first pattern given for duplicate strings.
  if (!nodes_[node].terminal && node != 0) {
    nodes_[node].terminal = true;
    nodes_[node].token_index = token_index;
  }
}

std::vector<AddedVocabulary::Trie::Match> AddedVocabulary::Trie::find_all(
    std::string_view text) const {
  std::vector<Match> out;
  for (size_t begin = 0; begin < text.size();) {
    uint32_t node = 0;
    size_t best_end = 0, best_index = 0;
    for (size_t pos = begin; pos < text.size(); ++pos) {
      const uint64_t key =
          (static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[pos]);
      auto it = edges_.find(key);
      if (it == edges_.end()) break;
      node = it->second;
      if (nodes_[node].terminal) {
        best_end = pos + 1;
        best_index = nodes_[node].token_index;
      }
    }
    if (best_end > 0) {
      out.push_back({begin, best_end, best_index});
      begin = best_end;
    } else {
      ++begin;
    }
  }
  return out;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer)
    : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    by_id_.emplace(t.id, i);
    by_content_.emplace(t.content, i);
    if (t.content.empty()) continue;
    if (t.normalized) {
      std::string pattern = t.content;
      if (normalizer != nullptr) normalizer->normalize(pattern);
      normalized_trie_.insert(pattern, i);
    } else {
      raw_trie_.insert(t.content, i);
    }
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

namespace {

bool last_char_is_word(std::string_view s) {
  if (s.empty()) return false;
  size_t start = s.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  size_t len = 0;
  return unicode::is_word_char(unicode::decode(s, start, &len));
}

bool first_char_is_word(std::string_view s) {
  size_t len = 0;
  return !s.empty() && unicode::is_word_char(unicode::decode(s, 0, &len));
}

// Start of the run of whitespace that ends `s` (HF: regex \s*$).
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t len = 0;
    if (!unicode::is_whitespace(unicode::decode(s, start, &len))) break;
    end = start;
  }
  return end;
}

size_t leading_space_len(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    size_t len = 0;
    if (!unicode::is_whitespace(unicode::decode(s, pos, &len))) break;
    pos += len;
  }
  return pos;
}

}  // namespace

std::vector<AddedVocabulary::Split> AddedVocabulary::find_matches(std::string_view text,
                                                                  const Trie& trie) const {
  std::vector<Split> splits;
  size_t start_offset = 0;
  for (const auto& m : trie.find_all(text)) {
    const AddedToken& token = tokens_[m.token_index];
    size_t start = m.begin, stop = m.end;
    if (token.single_word) {
      const bool start_space = start == 0 || !last_char_is_word(text.substr(0, start));
      const bool stop_space = stop == text.size() || !first_char_is_word(text.substr(stop));
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_len(text.substr(stop));
    if (start_offset < start) splits.push_back({start_offset, start, -1});
    splits.push_back({start, stop, token.id});
    start_offset = stop;
  }
  if (start_offset != text.size()) splits.push_back({start_offset, text.size(), -1});
  return splits;
}

std::vector<AddedVocabulary::Piece> AddedVocabulary::extract_and_normalize(
    std::string_view text, const Normalizer* normalizer) const {
  std::vector<Piece> pieces;
  for (const auto& s : find_matches(text, raw_trie_)) {
    if (s.end > s.begin) {
      pieces.push_back({std::string(text.substr(s.begin, s.end - s.begin)), s.id, s.begin == 0});
    }
  }
  std::vector<Piece> out;
  for (auto& piece : pieces) {
    if (piece.id >= 0) {
      out.push_back(std::move(piece));
      continue;
    }
    if (normalizer != nullptr) normalizer->normalize(piece.text);
    bool first = true;
    for (const auto& s : find_matches(piece.text, normalized_trie_)) {
      if (s.end == s.begin) continue;
      out.push_back({piece.text.substr(s.begin, s.end - s.begin), s.id, piece.at_start && first});
      first = false;
    }
  }
  return out;
}

}  // namespace dsmath
