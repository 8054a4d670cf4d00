// Automatic prefix caching (as vLLM's): every full KV block is indexed by a hash of all the
// tokens from the start of its sequence to the end of the block, chained block by block. A new
// sequence whose prompt begins with tokens some earlier sequence computed takes those blocks
// (shared, ref-counted) instead of computing them again: the few-shot prefix that every problem
// of a batch job shares is computed once.
//
// Blocks no sequence references stay cached until their memory is needed: they sit in an LRU
// list that the BlockManager evicts from only when its free list is empty. A hash hit is
// verified against the stored parent hash and tokens, so a 64-bit collision can never hand a
// sequence someone else's keys and values.
//
// This class is the index only; the BlockManager owns reference counts and calls it.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace dsmath {

using BlockId = int32_t;
using BlockHash = uint64_t;

// The hash of a block holding `tokens`, after a prefix whose last block hashed to `parent`
// (0 for the first block).
BlockHash chain_block_hash(BlockHash parent, std::span<const int32_t> tokens);

class PrefixCache {
 public:
  // The cached block that holds `tokens` after `parent`, if any.
  std::optional<BlockId> find(BlockHash hash, BlockHash parent,
                              std::span<const int32_t> tokens) const;
  // Indexes `block` (full, its rows written) under `hash`. Nothing changes when the hash is
  // already indexed (another block holds the same rows) or the block already has a hash.
  void insert(BlockHash hash, BlockHash parent, std::span<const int32_t> tokens, BlockId block);
  bool is_cached(BlockId block) const { return by_block_.count(block) != 0; }

  // Reference bookkeeping, called by the BlockManager when a cached block's count reaches 0
  // (it becomes evictable, most recently used) or leaves 0 (a sequence took it again).
  void on_unreferenced(BlockId block);
  void on_referenced(BlockId block);

  // Forgets the least recently used unreferenced block and returns it for reuse.
  std::optional<BlockId> evict();

  int32_t num_evictable() const { return int32_t(lru_.size()); }

 private:
  struct Entry {
    BlockHash hash, parent;
    std::vector<int32_t> tokens;
    std::list<BlockId>::iterator lru;  // lru_.end() while referenced
  };
  std::unordered_map<BlockHash, BlockId> by_hash_;
  std::unordered_map<BlockId, Entry> by_block_;
  std::list<BlockId> lru_;  // unreferenced cached blocks, least recently used first
};

}  // namespace dsmath
