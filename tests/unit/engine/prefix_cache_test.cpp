// Prefix caching in the BlockManager: full blocks indexed by their chained hash, hits shared by
// reference, unreferenced cached blocks evicted LRU only when the free list is empty, hash
// collisions rejected, and random operations that never leak a block.
#include "worker/engine/prefix_cache.h"

#include <gtest/gtest.h>

#include <random>

#include "worker/engine/block_manager.h"

namespace dsmath {
namespace {

std::vector<int32_t> seq(int32_t first, int32_t n) {
  std::vector<int32_t> t;
  for (int32_t i = 0; i < n; ++i) t.push_back(first + i);
  return t;
}

// Appends tokens to a table and indexes its full blocks, as the engine does after a forward.
void compute(BlockManager& m, BlockTable& t, const std::vector<int32_t>& tokens,
             std::vector<BlockHash>& hashes) {
  m.append(t, int32_t(tokens.size()) - t.num_tokens);
  m.cache_full_blocks(t, tokens, t.num_tokens, hashes);
}

TEST(PrefixCache, ChainedHashDependsOnEveryEarlierToken) {
  const auto a = seq(1, 4), b = seq(2, 4);
  EXPECT_EQ(chain_block_hash(0, a), chain_block_hash(0, a));
  EXPECT_NE(chain_block_hash(0, a), chain_block_hash(0, b));
  EXPECT_NE(chain_block_hash(1, a), chain_block_hash(2, a));
}

TEST(PrefixCache, ASecondSequenceTakesTheFullBlocksOfTheFirst) {
  BlockManager m(8, 4, /*prefix_caching=*/true);
  const auto tokens = seq(10, 10);  // blocks: 4 + 4 full, 2 partial
  BlockTable a;
  std::vector<BlockHash> ha;
  compute(m, a, tokens, ha);
  EXPECT_EQ(ha.size(), 2u);

  BlockTable b;
  std::vector<BlockHash> hb;
  EXPECT_EQ(m.take_cached_prefix(b, tokens, 8, hb), 8);
  EXPECT_EQ(b.blocks, std::vector<BlockId>(a.blocks.begin(), a.blocks.begin() + 2));
  EXPECT_EQ(m.ref_count(a.blocks[0]), 2);
  EXPECT_EQ(hb, ha);
  m.free(b);

  // A different second block: only the first is shared.
  auto other = tokens;
  other[5] = 999;
  BlockTable c;
  std::vector<BlockHash> hc;
  EXPECT_EQ(m.take_cached_prefix(c, other, 8, hc), 4);
  // max_blocks limits the match (the engine always recomputes a prompt's last token).
  m.free(c);
  hc.clear();
  EXPECT_EQ(m.take_cached_prefix(c, tokens, 1, hc), 4);
  m.free(c);
  m.free(a);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.num_cached_free(), 2);  // the two full blocks stay cached
  EXPECT_EQ(m.num_free(), 8);
}

TEST(PrefixCache, UnreferencedBlocksAreEvictedLeastRecentlyUsedFirstAndOnlyWhenNeeded) {
  BlockManager m(4, 2, true);
  std::vector<std::vector<int32_t>> prompts = {seq(0, 2), seq(100, 2), seq(200, 2)};
  for (const auto& p : prompts) {
    BlockTable t;
    std::vector<BlockHash> h;
    compute(m, t, p, h);
    m.free(t);
  }
  EXPECT_EQ(m.num_cached_free(), 3);
  // Touch prompt 0 again: it becomes the most recently used.
  {
    BlockTable t;
    std::vector<BlockHash> h;
    EXPECT_EQ(m.take_cached_prefix(t, prompts[0], 1, h), 2);
    m.free(t);
  }
  // Two new blocks: the never-cached free block goes first, then the LRU cached one (prompt 1).
  BlockTable big;
  m.append(big, 4);
  EXPECT_EQ(m.num_cached_free(), 2);
  std::vector<BlockHash> h;
  BlockTable probe;
  EXPECT_EQ(m.take_cached_prefix(probe, prompts[1], 1, h), 0) << "prompt 1 was evicted";
  h.clear();
  EXPECT_EQ(m.take_cached_prefix(probe, prompts[0], 1, h), 2);
  m.free(probe);
  h.clear();
  EXPECT_EQ(m.take_cached_prefix(probe, prompts[2], 1, h), 2);
  m.free(probe);
  m.free(big);
}

TEST(PrefixCache, ACollidingHashIsAMiss) {
  PrefixCache cache;
  const auto tokens = seq(5, 4);
  cache.insert(42, 0, tokens, 3);
  EXPECT_EQ(cache.find(42, 0, tokens), std::optional<BlockId>(3));
  EXPECT_FALSE(cache.find(42, 0, seq(6, 4)).has_value()) << "same hash, other tokens";
  EXPECT_FALSE(cache.find(42, 7, tokens).has_value()) << "same hash, other parent";
  cache.insert(42, 0, seq(9, 4), 4);  // a second block under a used hash is not indexed
  EXPECT_FALSE(cache.is_cached(4));
}

TEST(PrefixCache, ThousandRandomOperationsLeakNothing) {
  BlockManager m(12, 4, true);
  std::mt19937 rng(3);
  struct Seq {
    std::vector<int32_t> tokens;
    BlockTable table;
    std::vector<BlockHash> hashes;
  };
  std::vector<Seq> live;
  for (int op = 0; op < 1000; ++op) {
    const int kind = int(rng() % 3);
    if (kind == 0 && live.size() < 4) {  // start from a cached prefix of one of 3 prompts
      Seq s;
      s.tokens = seq(int32_t(rng() % 3) * 1000, 3 + int32_t(rng() % 10));
      const int32_t max_blocks = (int32_t(s.tokens.size()) - 1) / 4;
      const int32_t got = m.take_cached_prefix(s.table, s.tokens, max_blocks, s.hashes);
      ASSERT_EQ(got % 4, 0);
      if (m.blocks_needed(s.table, int32_t(s.tokens.size()) - got) > m.num_free()) {
        m.free(s.table);
        continue;
      }
      compute(m, s.table, s.tokens, s.hashes);
      live.push_back(std::move(s));
    } else if (kind == 1 && !live.empty()) {  // grow one
      Seq& s = live[rng() % live.size()];
      if (!m.can_append(s.table, 1)) continue;
      s.tokens.push_back(int32_t(rng() % 50));
      compute(m, s.table, s.tokens, s.hashes);
    } else if (!live.empty()) {  // finish one
      const size_t i = rng() % live.size();
      m.free(live[i].table);
      live.erase(live.begin() + ptrdiff_t(i));
    }
    int32_t referenced = 0;
    for (BlockId b = 0; b < m.num_blocks(); ++b) referenced += m.ref_count(b) > 0;
    ASSERT_EQ(referenced, m.num_used()) << "op " << op;
  }
  for (Seq& s : live) m.free(s.table);
  EXPECT_EQ(m.num_used(), 0);
  EXPECT_EQ(m.num_free(), 12);
}

}  // namespace
}  // namespace dsmath
