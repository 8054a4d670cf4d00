#include "common/tokenizer/bpe.h"

#include <cstdio>
#include <mutex>
#include <queue>

#include "common/core/error.h"
#include "common/tokenizer/unicode.h"

namespace dsmath {
namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string optional_string(const Json& config, const char* key) {
  if (!config.contains(key) || config[key].is_null()) return {};
  return config[key].get<std::string>();
}

}  // namespace

int32_t parse_token_id(const Json& id, const std::string& where) {
  if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId)
    fail(where, ": id ", id.dump(), " is not an integer in [0, ", kMaxTokenId, "]");
  return id.get<int32_t>();
}

BpeModel::BpeModel(const Json& config, const std::string& where) {
  if (config.value("type", std::string("BPE")) != "BPE") {
    fail(where, ": unsupported model type '", config["type"].get<std::string>(),
         "' (only BPE is supported)");
  }
  if (!config.contains("vocab") || !config["vocab"].is_object())
    fail(where, ".vocab: missing or not an object");
  const Json& vocab = config["vocab"];
  vocab_.reserve(vocab.size() * 2);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = parse_token_id(it.value(), cat(where, ".vocab[\"", it.key(), "\"]"));
    vocab_.emplace(it.key(), id);
    if (static_cast<size_t>(id) >= id_to_token_.size()) {
      id_to_token_.resize(id + 1);
      has_id_.resize(id + 1, false);
    }
    id_to_token_[id] = it.key();
    has_id_[id] = true;
  }
  if (config.contains("unk_token") && !config["unk_token"].is_null()) {
    unk_token_ = config["unk_token"].get<std::string>();
  }
  continuing_subword_prefix_ = optional_string(config, "continuing_subword_prefix");
  end_of_word_suffix_ = optional_string(config, "end_of_word_suffix");
  byte_fallback_ = config.value("byte_fallback", false);
  fuse_unk_ = config.value("fuse_unk", false);
  ignore_merges_ = config.value("ignore_merges", false);
  if (config.contains("dropout") && !config["dropout"].is_null() &&
      config["dropout"].get<double>() > 0.0) {
    fail(where, ".dropout: BPE dropout is not supported for inference");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto found = vocab_.find(name);
    byte_ids_[b] = found == vocab_.end() ? -1 : found->second;
  }

  const Json& merges = config.value("merges", Json::array());
  merges_.reserve(merges.size() * 2);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& m = merges[rank];
    std::string a, b;
    if (m.is_string()) {  // "a b" (tokenizers < 0.20)
      const auto s = m.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        fail(where, ".merges[", rank, "]: expected two tokens separated by one space, got \"", s,
             "\"");
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(where, ".merges[", rank, "]: expected \"a b\" or [\"a\", \"b\"]");
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end())
      fail(where, ".merges[", rank, "]: token \"", a, "\" is not in the vocab");
    if (ib == vocab_.end())
      fail(where, ".merges[", rank, "]: token \"", b, "\" is not in the vocab");
    const std::string merged = a + b.substr(std::min(continuing_subword_prefix_.size(), b.size()));
    const auto im = vocab_.find(merged);
    if (im == vocab_.end())
      fail(where, ".merges[", rank, "]: merged token \"", merged, "\" is not in the vocab");
    merges_.emplace(pair_key(ia->second, ib->second),
                    Merge{static_cast<int32_t>(rank), im->second});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

const BpeModel::Merge* BpeModel::find_merge(int32_t a, int32_t b) const {
  auto it = merges_.find(pair_key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  const std::string key(word);
  {
    std::shared_lock lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  auto whole = ignore_merges_ ? vocab_.find(key) : vocab_.end();
  if (whole != vocab_.end()) {
    ids.push_back(whole->second);
  } else {
    ids = merge_word(word);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::unique_lock lock(cache_mutex_);
  if (cache_.size() < kCacheCapacity) cache_.emplace(key, std::move(ids));
}

std::vector<int32_t> BpeModel::merge_word(std::string_view word) const {
  struct Symbol {
    int32_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const int index = static_cast<int>(symbols.size());
    symbols.push_back({id, index - 1, -1, true});
    if (index > 0) symbols[index - 1].next = index;
  };
  std::optional<int32_t> unk_id;
  if (unk_token_) {
    auto it = vocab_.find(*unk_token_);
    if (it == vocab_.end()) fail("BPE unk_token \"", *unk_token_, "\" is not in the vocab");
    unk_id = it->second;
  }
  bool pending_unk = false;  // an unk symbol waiting to be emitted (fuse_unk merges runs)
  std::string piece;
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = unicode::char_len(word, pos);
    piece.assign(word.substr(pos, len));
    if (pos > 0) piece.insert(0, continuing_subword_prefix_);
    if (pos + len == word.size()) piece += end_of_word_suffix_;
    pos += len;
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      if (pending_unk) add(*unk_id);
      pending_unk = false;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : piece) all = all && byte_ids_[c] >= 0;
      if (all) {
        // HF emits the byte tokens without flushing a pending unk first.
        for (unsigned char c : piece) add(byte_ids_[c]);
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && !fuse_unk_) add(*unk_id);
      pending_unk = true;
    }
  }
  if (pending_unk) add(*unk_id);

  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Candidate& o) const {  // min-heap on (rank, pos)
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, static_cast<int>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = find_merge(symbols[left.prev].id, left.id)) {
        queue.push({pm->rank, left.prev, pm->new_id});
      }
    }
    if (left.next >= 0) {
      if (const Merge* nm = find_merge(left.id, symbols[left.next].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const auto& s : symbols) {
    if (s.alive) ids.push_back(s.id);
  }
  return ids;
}

}  // namespace dsmath
