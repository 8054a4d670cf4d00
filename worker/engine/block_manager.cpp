#include "worker/engine/block_manager.h"

#include <algorithm>

#include "common/core/error.h"

namespace dsmath {

namespace {

int64_t blocks_for(int64_t tokens, int64_t block_size) {
  return (tokens + block_size - 1) / block_size;
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, bool prefix_caching)
    : block_size_(block_size),
      ref_counts_(size_t(std::max(num_blocks, 0)), 0),
      prefix_caching_(prefix_caching) {
  DSMATH_CHECK(num_blocks > 0, "block manager: num_blocks ", num_blocks, " must be positive");
  DSMATH_CHECK(block_size > 0, "block manager: block_size ", block_size, " must be positive");
  free_.reserve(size_t(num_blocks));
  // Pushed in reverse so that blocks are handed out 0, 1, 2, ... at first (easier to read in logs).
  for (BlockId b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

void BlockManager::check_table(const BlockTable& table, const char* op) const {
  DSMATH_CHECK(table.num_tokens >= 0 &&
                   int64_t(table.blocks.size()) == blocks_for(table.num_tokens, block_size_),
               "block manager ", op, ": a table of ", table.num_tokens, " tokens has ",
               table.blocks.size(), " blocks (block size ", block_size_, ")");
  for (BlockId b : table.blocks)
    DSMATH_CHECK(b >= 0 && b < num_blocks() && ref_counts_[size_t(b)] > 0, "block manager ", op,
                 ": block ", b, " of the table is not allocated");
}

int32_t BlockManager::blocks_needed(const BlockTable& table, int32_t new_tokens) const {
  check_table(table, "blocks_needed");
  DSMATH_CHECK(new_tokens >= 0, "block manager: cannot append ", new_tokens, " tokens");
  const int64_t total = int64_t(table.num_tokens) + new_tokens;
  int64_t needed = blocks_for(total, block_size_) - int64_t(table.blocks.size());
  const bool partial_last = table.num_tokens % block_size_ != 0;
  if (new_tokens > 0 && partial_last && ref_counts_[size_t(table.blocks.back())] > 1) ++needed;
  // More than the pool can ever hold: report it as such rather than overflowing int32.
  return int32_t(std::min<int64_t>(needed, int64_t(num_blocks()) + 1));
}

std::vector<BlockCopy> BlockManager::append(BlockTable& table, int32_t new_tokens) {
  const int32_t needed = blocks_needed(table, new_tokens);
  DSMATH_CHECK(needed <= num_free(), "block manager: appending ", new_tokens, " tokens to a ",
               table.num_tokens, "-token sequence needs ", needed, " free KV blocks, only ",
               num_free(), " of ", num_blocks(), " are free");
  std::vector<BlockCopy> copies;
  if (new_tokens == 0) return copies;
  if (table.num_tokens % block_size_ != 0) {
    BlockId& last = table.blocks.back();
    if (ref_counts_[size_t(last)] > 1) {
      // Others still read the shared rows; this sequence gets its own copy to write into.
      const BlockId copy = allocate();
      copies.push_back({last, copy});
      --ref_counts_[size_t(last)];
      last = copy;
    }
  }
  table.num_tokens += new_tokens;
  while (int64_t(table.blocks.size()) < blocks_for(table.num_tokens, block_size_))
    table.blocks.push_back(allocate());
  return copies;
}

BlockTable BlockManager::fork(const BlockTable& table) {
  check_table(table, "fork");
  for (BlockId b : table.blocks) ++ref_counts_[size_t(b)];
  return table;
}

void BlockManager::free(BlockTable& table) {
  check_table(table, "free");
  for (BlockId b : table.blocks) release(b);
  table.blocks.clear();
  table.num_tokens = 0;
}

int32_t BlockManager::ref_count(BlockId block) const {
  DSMATH_CHECK(block >= 0 && block < num_blocks(), "block manager: block id ", block,
               " out of range [0, ", num_blocks(), ")");
  return ref_counts_[size_t(block)];
}

int32_t BlockManager::take_cached_prefix(BlockTable& table, std::span<const int32_t> tokens,
                                         int32_t max_blocks, std::vector<BlockHash>& hashes) {
  DSMATH_CHECK(table.num_tokens == 0 && hashes.empty(),
               "block manager: a cached prefix starts an empty table");
  if (!prefix_caching_) return 0;
  const int32_t full = int32_t(std::min<int64_t>(max_blocks, int64_t(tokens.size()) / block_size_));
  BlockHash parent = 0;
  for (int32_t i = 0; i < full; ++i) {
    const auto block_tokens = tokens.subspan(size_t(i) * size_t(block_size_), size_t(block_size_));
    const BlockHash hash = chain_block_hash(parent, block_tokens);
    const std::optional<BlockId> hit = cache_.find(hash, parent, block_tokens);
    if (!hit) break;
    if (ref_counts_[size_t(*hit)]++ == 0) cache_.on_referenced(*hit);
    table.blocks.push_back(*hit);
    table.num_tokens += block_size_;
    hashes.push_back(hash);
    parent = hash;
  }
  return table.num_tokens;
}

void BlockManager::cache_full_blocks(const BlockTable& table, std::span<const int32_t> tokens,
                                     int32_t computed, std::vector<BlockHash>& hashes) {
  if (!prefix_caching_) return;
  DSMATH_CHECK(computed <= table.num_tokens && size_t(computed) <= tokens.size(),
               "block manager: ", computed, " computed tokens exceed the table or the sequence");
  for (size_t i = hashes.size(); int64_t(i + 1) * block_size_ <= computed; ++i) {
    const auto block_tokens = tokens.subspan(i * size_t(block_size_), size_t(block_size_));
    const BlockHash parent = i == 0 ? 0 : hashes[i - 1];
    const BlockHash hash = chain_block_hash(parent, block_tokens);
    cache_.insert(hash, parent, block_tokens, table.blocks[i]);
    hashes.push_back(hash);
  }
}

BlockId BlockManager::allocate() {
  BlockId b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    const std::optional<BlockId> evicted = cache_.evict();
    DSMATH_CHECK(evicted.has_value(), "block manager: no free KV block left");
    b = *evicted;
  }
  ref_counts_[size_t(b)] = 1;
  return b;
}

void BlockManager::release(BlockId block) {
  if (--ref_counts_[size_t(block)] != 0) return;
  if (cache_.is_cached(block)) {
    cache_.on_unreferenced(block);  // stays cached until its memory is needed
  } else {
    free_.push_back(block);
  }
}

}  // namespace dsmath
