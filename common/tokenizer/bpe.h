// The BPE model of tokenizer.json (HF `tokenizers` semantics): vocab + ranked merges,
// byte_fallback, unk / fuse_unk, ignore_merges, continuing_subword_prefix, end_of_word_suffix.
// Words are merged with a rank-ordered priority queue and cached.
#pragma once

#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/core/json_file.h"

namespace dsmath {

// Token ids index dense tables (id -> token), so an id is bounded: 2^24 - 1 is 64 times the
// largest vocabularies in use.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;
// A token id in tokenizer.json (vocab, added_tokens, post_processor): an integer in
// [0, kMaxTokenId], else Error naming `where`.
int32_t parse_token_id(const Json& id, const std::string& where);

class BpeModel {
 public:
  BpeModel(const Json& config, const std::string& where);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when the id is not in the vocab
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  std::vector<int32_t> merge_word(std::string_view word) const;
  const Merge* find_merge(int32_t a, int32_t b) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // id of "<0xXX>" for byte_fallback, -1 when absent

  static constexpr size_t kCacheCapacity = 10000;  // same as HF: stop inserting when full
  mutable std::shared_mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace dsmath
