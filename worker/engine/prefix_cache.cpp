#include "worker/engine/prefix_cache.h"

#include <algorithm>

#include "common/core/error.h"

namespace dsmath {

BlockHash chain_block_hash(BlockHash parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids, with a SplitMix64 finalizer.
  uint64_t h = 0xCBF29CE484222325ull ^ parent;
  for (int32_t t : tokens) {
    h = (h ^ uint32_t(t)) * 0x100000001B3ull;
    h ^= h >> 29;
  }
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

std::optional<BlockId> PrefixCache::find(BlockHash hash, BlockHash parent,
                                         std::span<const int32_t> tokens) const {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const Entry& e = by_block_.at(it->second);
  if (e.parent != parent ||
      !std::equal(tokens.begin(), tokens.end(), e.tokens.begin(), e.tokens.end()))
    return std::nullopt;  // a hash collision: treat as a miss
  return it->second;
}

void PrefixCache::insert(BlockHash hash, BlockHash parent, std::span<const int32_t> tokens,
                         BlockId block) {
  if (by_hash_.count(hash) || by_block_.count(block)) return;
  by_hash_.emplace(hash, block);
  by_block_.emplace(block, Entry{hash, parent, {tokens.begin(), tokens.end()}, lru_.end()});
}

void PrefixCache::on_unreferenced(BlockId block) {
  Entry& e = by_block_.at(block);
  DSMATH_CHECK(e.lru == lru_.end(), "prefix cache: block ", block, " released twice");
  e.lru = lru_.insert(lru_.end(), block);
}

void PrefixCache::on_referenced(BlockId block) {
  Entry& e = by_block_.at(block);
  if (e.lru == lru_.end()) return;
  lru_.erase(e.lru);
  e.lru = lru_.end();
}

std::optional<BlockId> PrefixCache::evict() {
  if (lru_.empty()) return std::nullopt;
  const BlockId block = lru_.front();
  lru_.pop_front();
  by_hash_.erase(by_block_.at(block).hash);
  by_block_.erase(block);
  return block;
}

}  // namespace dsmath
