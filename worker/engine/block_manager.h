// Fixed-size KV blocks with reference counts, vLLM-style. A sequence's block table lists the
// blocks holding its positions in order: position p lives in blocks[p / block_size], slot
// p % block_size. Blocks are shared by reference (fork: the n samples of one prompt share its
// prefill) and copied on write when a sequence is about to write into a shared, partially filled
// last block. This class only does the bookkeeping; the caller performs the returned block
// copies on the KV storage (PagedKVCache::copy_blocks) before writing new rows.
//
// With prefix caching on, full blocks are also indexed by the hash of the tokens up to their end
// (PrefixCache): a sequence can start from blocks that hold its prefix already, and a block whose
// last reference goes stays cached, evictable, until the free list runs dry.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "worker/engine/prefix_cache.h"

namespace dsmath {

struct BlockTable {
  std::vector<BlockId> blocks;  // always exactly ceil(num_tokens / block_size) entries
  int32_t num_tokens = 0;       // positions reserved so far
};

struct BlockCopy {
  BlockId src, dst;
  bool operator==(const BlockCopy&) const = default;
};

class BlockManager {
 public:
  explicit BlockManager(int32_t num_blocks, int32_t block_size = 16, bool prefix_caching = false);

  int32_t block_size() const { return block_size_; }
  int32_t num_blocks() const { return int32_t(ref_counts_.size()); }
  bool prefix_caching() const { return prefix_caching_; }
  // Blocks an append can take: never used, or cached and unreferenced (evicted on demand).
  int32_t num_free() const { return int32_t(free_.size()) + cache_.num_evictable(); }
  int32_t num_cached_free() const { return cache_.num_evictable(); }
  int32_t num_used() const { return num_blocks() - num_free(); }

  // Free blocks that append(table, new_tokens) would take: the new blocks past the end, plus
  // one for the copy of a shared partial last block.
  int32_t blocks_needed(const BlockTable& table, int32_t new_tokens) const;
  bool can_append(const BlockTable& table, int32_t new_tokens) const {
    return blocks_needed(table, new_tokens) <= num_free();
  }

  // Reserves room for new_tokens more positions at the end of `table`. If the last block is
  // partially filled and shared (ref count > 1), it is first replaced by a fresh block; the
  // returned (src, dst) copies must be applied to the KV storage before any row is written.
  // Throws Error, changing nothing, when there are not enough free blocks (check can_append).
  std::vector<BlockCopy> append(BlockTable& table, int32_t new_tokens);

  // A second table sharing every block of `table` (each ref count + 1).
  BlockTable fork(const BlockTable& table);

  // Drops the table's references (blocks return to the pool at 0) and empties it.
  void free(BlockTable& table);

  int32_t ref_count(BlockId block) const;

  // Prefix caching. `tokens` are a sequence's tokens; `hashes` the chained hashes of its full
  // blocks so far, which the caller keeps with the sequence (empty for an empty table).
  //
  // Starts the empty `table` with the longest cached run of blocks that holds tokens' prefix,
  // at most `max_blocks` blocks; returns how many tokens those blocks cover.
  int32_t take_cached_prefix(BlockTable& table, std::span<const int32_t> tokens, int32_t max_blocks,
                             std::vector<BlockHash>& hashes);
  // Indexes the blocks of `table` that are full within its first `computed` tokens (their rows
  // written) and not indexed yet. No-op with prefix caching off.
  void cache_full_blocks(const BlockTable& table, std::span<const int32_t> tokens, int32_t computed,
                         std::vector<BlockHash>& hashes);

 private:
  void check_table(const BlockTable& table, const char* op) const;
  BlockId allocate();
  void release(BlockId block);

  int32_t block_size_;
  std::vector<int32_t> ref_counts_;  // per block; 0 = free
  std::vector<BlockId> free_;        // stack: the most recently freed block is reused first
  bool prefix_caching_;
  PrefixCache cache_;
};

}  // namespace dsmath
