// The added vocabulary of tokenizer.json ("added_tokens"): tokens matched in the raw text
// before the model sees it, exactly as HF AddedVocabulary::extract_and_normalize does.
// Non-normalized tokens are cut out of the original text first; the remaining pieces are then
// normalized one by one and normalized tokens (whose patterns are themselves normalized) are
// cut out of those.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/core/json_file.h"
#include "common/tokenizer/normalizer.h"

namespace dsmath {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

AddedToken parse_added_token(const Json& config, const std::string& where);

class AddedVocabulary {
 public:
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  struct Piece {
    std::string text;
    int32_t id;     // the added token's id, or -1 for text still to be tokenized
    bool at_start;  // begins at offset 0 of the input
  };
  std::vector<Piece> extract_and_normalize(std::string_view text,
                                           const Normalizer* normalizer) const;

  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // Leftmost-longest multi-pattern matcher over bytes (what aho-corasick's LeftmostLongest
  // returns), small enough as a plain trie for a few thousand tokens.
  class Trie {
   public:
    void insert(std::string_view pattern, size_t token_index);
    bool empty() const { return nodes_.size() == 1 && !nodes_[0].terminal; }
    struct Match {
      size_t begin, end, token_index;
    };
    std::vector<Match> find_all(std::string_view text) const;

   private:
    struct Node {
      bool terminal = false;
      size_t token_index = 0;
    };
    std::vector<Node> nodes_{Node{}};
    std::unordered_map<uint64_t, uint32_t> edges_;  // (node << 8 | byte) -> child
  };

  struct Split {
    size_t begin, end;
    int32_t id;
  };
  std::vector<Split> find_matches(std::string_view text, const Trie& trie) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  Trie raw_trie_;         // normalized == false: matched on the input as written
  Trie normalized_trie_;  // normalized == true: matched after the normalizer
};

}  // namespace dsmath
