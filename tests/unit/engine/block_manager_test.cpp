// BlockManager: allocation as tokens arrive, sharing by fork, copy-on-write of a shared partial
// last block, freeing, running out; and 1,000 random operations checked at every step against a
// simple model, including the contents each sequence would read back through its table.
#include "worker/engine/block_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "common/core/error.h"

namespace dsmath {
namespace {

TEST(BlockManager, AllocatesABlockPerBlockSizeTokens) {
  BlockManager m(8, 16);
  EXPECT_EQ(m.block_size(), 16);
  EXPECT_EQ(m.num_blocks(), 8);
  BlockTable t;
  EXPECT_TRUE(m.append(t, 0).empty());
  EXPECT_TRUE(t.blocks.empty());
  EXPECT_TRUE(m.append(t, 1).empty());
  EXPECT_EQ(t.blocks.size(), 1u);
  m.append(t, 15);  // fills the first block exactly
  EXPECT_EQ(t.blocks.size(), 1u);
  EXPECT_EQ(m.blocks_needed(t, 1), 1);
  m.append(t, 1);
  EXPECT_EQ(t.blocks.size(), 2u);
  EXPECT_EQ(t.num_tokens, 17);
  m.append(t, 40);  // 57 tokens: 4 blocks
  EXPECT_EQ(t.blocks.size(), 4u);
  EXPECT_EQ(m.num_free(), 4);
  for (BlockId b : t.blocks) EXPECT_EQ(m.ref_count(b), 1);
}

TEST(BlockManager, ForkSharesEveryBlock) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 10);  // 3 blocks, last one partial
  const BlockTable b = m.fork(a);
  EXPECT_EQ(b.blocks, a.blocks);
  EXPECT_EQ(b.num_tokens, 10);
  EXPECT_EQ(m.num_free(), 5);  // sharing takes no new block
  for (BlockId id : a.blocks) EXPECT_EQ(m.ref_count(id), 2);
}

TEST(BlockManager, CopyOnWriteOfSharedPartialLastBlock) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 10);
  BlockTable b = m.fork(a);
  const BlockTable a_before = a;
  EXPECT_EQ(m.blocks_needed(b, 1), 1);  // the copy
  const auto copies = m.append(b, 1);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, a.blocks[2]);
  EXPECT_EQ(copies[0].dst, b.blocks[2]);
  EXPECT_NE(b.blocks[2], a.blocks[2]);
  EXPECT_EQ(a.blocks, a_before.blocks);  // the other sharer is untouched
  EXPECT_EQ(m.ref_count(a.blocks[0]), 2);
  EXPECT_EQ(m.ref_count(a.blocks[1]), 2);
  EXPECT_EQ(m.ref_count(a.blocks[2]), 1);
  EXPECT_EQ(m.ref_count(b.blocks[2]), 1);
  EXPECT_EQ(b.num_tokens, 11);
  // Now the last sharer of the old block owns it alone and writes in place.
  EXPECT_TRUE(m.append(a, 1).empty());
  EXPECT_EQ(a.blocks, a_before.blocks);
}

TEST(BlockManager, CopyOnWriteThenGrowPastTheBlock) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 6);
  BlockTable b = m.fork(a);
  EXPECT_EQ(m.blocks_needed(b, 5), 2);  // the copy of block 1, one block for tokens 8..10
  const auto copies = m.append(b, 5);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, a.blocks[1]);
  EXPECT_EQ(copies[0].dst, b.blocks[1]);
  EXPECT_EQ(b.blocks.size(), 3u);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_EQ(m.num_free(), 8 - 4);
}

TEST(BlockManager, NoCopyWhenTheSharedLastBlockIsFull) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 8);
  BlockTable b = m.fork(a);
  EXPECT_EQ(m.blocks_needed(b, 1), 1);
  EXPECT_TRUE(m.append(b, 1).empty());  // new tokens go to a new block; full ones stay shared
  EXPECT_EQ(b.blocks.size(), 3u);
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_EQ(b.blocks[1], a.blocks[1]);
  EXPECT_EQ(m.ref_count(a.blocks[1]), 2);
  EXPECT_EQ(m.ref_count(b.blocks[2]), 1);
}

TEST(BlockManager, NoCopyWhenTheLastBlockIsNotShared) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 6);
  const BlockId last = a.blocks[1];
  EXPECT_EQ(m.blocks_needed(a, 2), 0);
  EXPECT_TRUE(m.append(a, 2).empty());
  EXPECT_EQ(a.blocks[1], last);
}

TEST(BlockManager, AppendingNothingToASharedPartialBlockCopiesNothing) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 3);
  BlockTable b = m.fork(a);
  EXPECT_EQ(m.blocks_needed(b, 0), 0);
  EXPECT_TRUE(m.append(b, 0).empty());
  EXPECT_EQ(m.ref_count(a.blocks[0]), 2);
}

TEST(BlockManager, FreeReturnsBlocksOnlyWhenTheLastReferenceGoes) {
  BlockManager m(8, 4);
  BlockTable a;
  m.append(a, 10);
  BlockTable b = m.fork(a);
  m.append(b, 4);  // copy of block 2 and one more block: b holds 2 shared + 2 own
  EXPECT_EQ(m.num_free(), 3);
  const std::vector<BlockId> shared(a.blocks.begin(), a.blocks.begin() + 2);
  m.free(a);
  EXPECT_TRUE(a.blocks.empty());
  EXPECT_EQ(a.num_tokens, 0);
  EXPECT_EQ(m.num_free(), 4);  // only a's own last block came back
  for (BlockId id : shared) EXPECT_EQ(m.ref_count(id), 1);
  m.free(b);
  EXPECT_EQ(m.num_free(), 8);
  for (BlockId id = 0; id < 8; ++id) EXPECT_EQ(m.ref_count(id), 0);
  // A freed table is empty, so freeing it again is harmless.
  m.free(b);
  EXPECT_EQ(m.num_free(), 8);
}

TEST(BlockManager, RunningOutChangesNothing) {
  BlockManager m(4, 4);
  BlockTable a;
  m.append(a, 10);  // 3 blocks
  EXPECT_TRUE(m.can_append(a, 6));
  EXPECT_FALSE(m.can_append(a, 7));  // needs 2 more
  const BlockTable before = a;
  EXPECT_THROW(m.append(a, 7), Error);
  EXPECT_EQ(a.blocks, before.blocks);
  EXPECT_EQ(a.num_tokens, before.num_tokens);
  EXPECT_EQ(m.num_free(), 1);

  // Copy-on-write counts: one free block is enough to grow in place, not to copy and grow.
  BlockTable b = m.fork(a);
  EXPECT_TRUE(m.can_append(b, 1));   // the copy takes the last free block
  EXPECT_FALSE(m.can_append(b, 3));  // the copy and one new block
  EXPECT_THROW(m.append(b, 3), Error);
  EXPECT_EQ(b.blocks, a.blocks);
  EXPECT_EQ(m.ref_count(a.blocks[2]), 2);
  EXPECT_EQ(m.num_free(), 1);

  BlockTable c;
  EXPECT_FALSE(m.can_append(c, 5));
  EXPECT_FALSE(m.can_append(c, 1'000'000'000));  // no int32 overflow
  EXPECT_TRUE(m.can_append(c, 4));
}

TEST(BlockManager, RejectsBadArgumentsAndInconsistentTables) {
  EXPECT_THROW(BlockManager(0), Error);
  EXPECT_THROW(BlockManager(4, 0), Error);
  BlockManager m(4, 4);
  BlockTable a;
  EXPECT_THROW(m.append(a, -1), Error);
  EXPECT_THROW(m.ref_count(4), Error);
  EXPECT_THROW(m.ref_count(-1), Error);
  BlockTable wrong_count{{0}, 5};  // 5 tokens need 2 blocks
  EXPECT_THROW(m.append(wrong_count, 1), Error);
  BlockTable unallocated{{3}, 2};  // block 3 is free
  EXPECT_THROW(m.fork(unallocated), Error);
  EXPECT_THROW(m.free(unallocated), Error);
  BlockTable out_of_range{{9}, 2};
  EXPECT_THROW(m.free(out_of_range), Error);
  EXPECT_EQ(m.num_free(), 4);
}

// 1,000 random operations on up to a dozen sequences over a small pool. The model: each live
// sequence's token history, and the contents of every block as written through the returned
// copies. At every step, ref counts must equal the number of live tables holding each block,
// free blocks those held by none, and every sequence must read back its own history.
TEST(BlockManager, RandomOperationsKeepCountsAndContentsAndNeverLeak) {
  constexpr int32_t kBlocks = 40, kBlockSize = 4;
  BlockManager m(kBlocks, kBlockSize);
  std::mt19937 rng(20261129);
  struct Seq {
    BlockTable table;
    std::vector<int> tokens;
  };
  std::vector<Seq> seqs;
  std::vector<std::vector<int>> storage(kBlocks, std::vector<int>(kBlockSize, -1));
  int next_token = 0;
  int ran_out = 0, copied = 0, forked = 0, freed = 0;
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };

  auto append = [&](Seq& s, int32_t n) {
    if (!m.can_append(s.table, n)) {
      ++ran_out;
      const BlockTable before = s.table;
      const int32_t free_before = m.num_free();
      EXPECT_THROW(m.append(s.table, n), Error);
      EXPECT_EQ(s.table.blocks, before.blocks);
      EXPECT_EQ(s.table.num_tokens, before.num_tokens);
      EXPECT_EQ(m.num_free(), free_before);
      return;
    }
    const bool partial = s.table.num_tokens % kBlockSize != 0;
    const bool expect_copy = n > 0 && partial && m.ref_count(s.table.blocks.back()) > 1;
    const int32_t free_before = m.num_free(), needed = m.blocks_needed(s.table, n);
    const auto copies = m.append(s.table, n);
    EXPECT_EQ(copies.size(), expect_copy ? 1u : 0u);
    EXPECT_EQ(m.num_free(), free_before - needed);
    for (const BlockCopy& c : copies) storage[size_t(c.dst)] = storage[size_t(c.src)], ++copied;
    for (int32_t i = 0; i < n; ++i) {
      const int32_t pos = s.table.num_tokens - n + i;
      storage[size_t(s.table.blocks[size_t(pos / kBlockSize)])][size_t(pos % kBlockSize)] =
          next_token;
      s.tokens.push_back(next_token++);
    }
  };

  auto check_model = [&](int step) {
    std::map<BlockId, int32_t> refs;
    for (const Seq& s : seqs) {
      ASSERT_EQ(s.table.num_tokens, int32_t(s.tokens.size())) << "step " << step;
      ASSERT_EQ(s.table.blocks.size(), (s.tokens.size() + kBlockSize - 1) / kBlockSize);
      for (BlockId b : s.table.blocks) ++refs[b];
      for (size_t p = 0; p < s.tokens.size(); ++p)
        ASSERT_EQ(storage[size_t(s.table.blocks[p / kBlockSize])][p % kBlockSize], s.tokens[p])
            << "step " << step << ": a sequence reads another's token at position " << p;
    }
    for (BlockId b = 0; b < kBlocks; ++b)
      ASSERT_EQ(m.ref_count(b), refs.count(b) ? refs[b] : 0) << "step " << step << " block " << b;
    ASSERT_EQ(m.num_free(), kBlocks - int32_t(refs.size())) << "step " << step;
  };

  for (int step = 0; step < 1000; ++step) {
    const int op = std::uniform_int_distribution<int>(0, 9)(rng);
    if (seqs.empty() || (op <= 1 && seqs.size() < 12)) {  // a new prompt
      seqs.push_back({});
      append(seqs.back(), std::uniform_int_distribution<int32_t>(1, 14)(rng));
      if (seqs.back().tokens.empty()) seqs.pop_back();  // ran out: the prompt waits
    } else if (op <= 5) {                               // decode or a prompt chunk
      append(seqs[pick(seqs.size())], std::uniform_int_distribution<int32_t>(0, 6)(rng));
    } else if (op <= 7 && seqs.size() < 12) {  // n samples of one prompt
      Seq copy = seqs[pick(seqs.size())];
      copy.table = m.fork(copy.table);
      seqs.push_back(std::move(copy));
      ++forked;
    } else {  // finished, cancelled or preempted
      const size_t i = pick(seqs.size());
      m.free(seqs[i].table);
      seqs.erase(seqs.begin() + std::ptrdiff_t(i));
      ++freed;
    }
    check_model(step);
    if (HasFatalFailure()) return;
  }
  // The run must have exercised every path, or it proves little.
  EXPECT_GT(ran_out, 10);
  EXPECT_GT(copied, 10);
  EXPECT_GT(forked, 50);
  EXPECT_GT(freed, 50);
  for (Seq& s : seqs) m.free(s.table);
  EXPECT_EQ(m.num_free(), kBlocks);
  for (BlockId b = 0; b < kBlocks; ++b) EXPECT_EQ(m.ref_count(b), 0);
}

}  // namespace
}  // namespace dsmath
