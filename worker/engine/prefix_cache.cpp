#include "worker/engine/prefix_cache.h"

#include <algorithm>

#include "common/core/error.h"
#include "common/core/hash.h"

namespace dsmath {

BlockHash chain_block_hash(BlockHash parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids (each a whole word, not its bytes, so an
  // extra shift keeps the high bits moving), finalized by mix64.
  uint64_t h = kFnvOffset ^ parent;
  for (int32_t t : tokens) {
    h = fnv1a_step(h, uint32_t(t));
    h ^= h >> 29;
  }
  return mix64(h);
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
