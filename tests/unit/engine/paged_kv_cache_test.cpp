// PagedKVCache: sizing, rows written through a block table read back at the right slots,
// copy_block across every layer, range errors; and the whole path the model takes (BlockManager
// tables, copy-on-write, write, paged attention) against contiguous attention, bit for bit.
#include "worker/model/paged_kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/core/error.h"
#include "kernels/cpu/attention.h"
#include "tests/support/random_floats.h"
#include "worker/engine/block_manager.h"

namespace dsmath {
namespace {

ModelConfig tiny_config(int64_t layers = 3, int64_t kv_heads = 2, int64_t head_dim = 8) {
  ModelConfig c;
  c.hidden_size = 4 * head_dim;
  c.num_attention_heads = 4;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.num_hidden_layers = layers;
  return c;
}

std::vector<float> random_floats(size_t n, uint32_t seed) {
  return testing::random_floats(n, seed, 2.0f);
}

std::vector<float> row_of(const float* p, int64_t n) {
  return std::vector<float>(p, p + n);
}

TEST(PagedKVCache, SizesFromBlocksOrBytes) {
  const ModelConfig c = tiny_config(3, 2, 8);
  // 2 (K, V) x 3 layers x 16 slots x 2 heads x 8 dims x 4 bytes
  EXPECT_EQ(PagedKVCache::bytes_per_block(c, 2), 2 * 3 * 16 * 16 * 4);
  EXPECT_EQ(PagedKVCache::bytes_per_block(c, 1, 4), 2 * 3 * 4 * 8 * 4);
  EXPECT_EQ(PagedKVCache::blocks_for_bytes(c, 2, 10 * 6144 + 100), 10);
  EXPECT_EQ(PagedKVCache::blocks_for_bytes(c, 2, 100), 0);
  EXPECT_EQ(PagedKVCache::blocks_for_bytes(c, 2, -1), 0);
  // DeepSeekMath 7B, one rank of two: 16 kv heads of 128, 30 layers: 7.5 MiB a block.
  ModelConfig big = tiny_config(30, 32, 128);
  EXPECT_EQ(PagedKVCache::bytes_per_block(big, 16), int64_t(2 * 30 * 16 * 16 * 128 * 4));
  const PagedKVCache cache(c, 1, 5, 4);
  EXPECT_EQ(cache.num_layers(), 3);
  EXPECT_EQ(cache.num_blocks(), 5);
  EXPECT_EQ(cache.block_size(), 4);
  EXPECT_EQ(cache.row_size(), 8);  // this rank's kv heads, not the config's
}

TEST(PagedKVCache, Bf16HalvesTheBytesAndRoundsRowsToNearestEven) {
  const ModelConfig c = tiny_config(3, 2, 8);
  EXPECT_EQ(PagedKVCache::bytes_per_block(c, 2, 16, DType::BF16), 2 * 3 * 16 * 16 * 2);
  EXPECT_EQ(PagedKVCache::blocks_for_bytes(c, 2, 10 * 3072 + 100, 16, DType::BF16), 10);
  EXPECT_THROW(PagedKVCache(c, 2, 4, 4, DType::F16), Error);
  PagedKVCache cache(c, 2, 4, 4, DType::BF16);
  EXPECT_EQ(cache.dtype(), DType::BF16);
  EXPECT_THROW(cache.keys(0), Error);  // an f32 view of bf16 rows
  const int64_t row = cache.row_size();
  const auto k = random_floats(size_t(6 * row), 5), v = random_floats(size_t(6 * row), 6);
  const std::vector<int32_t> table = {3, 1};
  cache.write(2, table, 0, 6, k.data(), v.data());
  for (int64_t p = 0; p < 6; ++p) {
    const int64_t slot = (table[size_t(p / 4)] * 4 + p % 4) * row;
    for (int64_t i = 0; i < row; ++i) {
      EXPECT_EQ(cache.keys_bf16(2)[slot + i], f32_to_bf16(k[size_t(p * row + i)]));
      EXPECT_EQ(cache.values_bf16(2)[slot + i], f32_to_bf16(v[size_t(p * row + i)]));
    }
  }
  cache.copy_block(1, 0);
  EXPECT_EQ(0, std::memcmp(cache.keys_bf16(2), cache.keys_bf16(2) + 4 * row, size_t(4 * row) * 2));
}

TEST(PagedKVCache, RowsLandAtTheirTableSlotsAcrossBlockBoundaries) {
  const ModelConfig c = tiny_config();
  PagedKVCache cache(c, 2, 8, 4);
  const int64_t row = cache.row_size();
  const std::vector<int32_t> table = {6, 1, 3, 0};  // 16 positions, scrambled
  const auto k = random_floats(size_t(14 * row), 1), v = random_floats(size_t(14 * row), 2);
  // A 3-token prompt chunk, then 10 more spanning three blocks, then one decode token.
  cache.write(1, table, 0, 3, k.data(), v.data());
  cache.write(1, table, 3, 10, k.data() + 3 * row, v.data() + 3 * row);
  cache.write(1, table, 13, 1, k.data() + 13 * row, v.data() + 13 * row);
  for (int64_t p = 0; p < 14; ++p) {
    const int64_t slot = (table[size_t(p / 4)] * 4 + p % 4) * row;
    EXPECT_EQ(cache.key_row(1, table, p), cache.keys(1) + slot);
    EXPECT_EQ(cache.value_row(1, table, p), cache.values(1) + slot);
    EXPECT_EQ(row_of(cache.key_row(1, table, p), row), row_of(k.data() + p * row, row)) << p;
    EXPECT_EQ(row_of(cache.value_row(1, table, p), row), row_of(v.data() + p * row, row)) << p;
  }
  // Other layers, and keys vs values, are separate storage.
  const auto zeros = std::vector<float>(size_t(row), 0.0f);
  cache.write(0, table, 0, 1, zeros.data(), zeros.data());
  cache.write(2, table, 0, 1, zeros.data(), zeros.data());
  EXPECT_EQ(row_of(cache.key_row(1, table, 0), row), row_of(k.data(), row));
  EXPECT_NE(cache.keys(1), cache.values(1));
}

TEST(PagedKVCache, CopyBlockCopiesEveryLayerKeysAndValues) {
  const ModelConfig c = tiny_config();
  PagedKVCache cache(c, 2, 4, 4);
  const int64_t row = cache.row_size();
  const std::vector<int32_t> src = {2}, dst = {0};
  std::vector<std::vector<float>> ks, vs;
  for (int64_t layer = 0; layer < 3; ++layer) {
    ks.push_back(random_floats(size_t(4 * row), uint32_t(10 + layer)));
    vs.push_back(random_floats(size_t(4 * row), uint32_t(20 + layer)));
    cache.write(layer, src, 0, 4, ks.back().data(), vs.back().data());
  }
  cache.copy_block(2, 0);
  for (int64_t layer = 0; layer < 3; ++layer)
    for (int64_t p = 0; p < 4; ++p) {
      EXPECT_EQ(row_of(cache.key_row(layer, dst, p), row),
                row_of(ks[size_t(layer)].data() + p * row, row));
      EXPECT_EQ(row_of(cache.value_row(layer, dst, p), row),
                row_of(vs[size_t(layer)].data() + p * row, row));
    }
  cache.copy_block(2, 2);  // a no-op, not an overlapping memcpy
  EXPECT_EQ(row_of(cache.key_row(0, src, 0), row), row_of(ks[0].data(), row));
}

TEST(PagedKVCache, RejectsOutOfRangeAccess) {
  const ModelConfig c = tiny_config();
  EXPECT_THROW(PagedKVCache(c, 0, 4, 4), Error);
  EXPECT_THROW(PagedKVCache(c, 2, 0, 4), Error);
  EXPECT_THROW(PagedKVCache(c, 2, 4, 0), Error);
  PagedKVCache cache(c, 2, 4, 4);
  const std::vector<float> rows(size_t(8 * cache.row_size()), 1.0f);
  const std::vector<int32_t> table = {1, 2}, bad = {1, 4};
  EXPECT_THROW(cache.write(0, table, 6, 3, rows.data(), rows.data()), Error);  // past the table
  EXPECT_THROW(cache.write(0, table, -1, 1, rows.data(), rows.data()), Error);
  EXPECT_THROW(cache.write(3, table, 0, 1, rows.data(), rows.data()), Error);  // no layer 3
  EXPECT_THROW(cache.write(0, bad, 4, 1, rows.data(), rows.data()), Error);    // no block 4
  EXPECT_THROW(cache.key_row(0, table, 8), Error);
  EXPECT_THROW(cache.copy_block(0, 4), Error);
  EXPECT_THROW(cache.copy_block(-1, 0), Error);
}

// What the model does each step, for a prompt forked into two samples that then diverge:
// tables from the BlockManager, its copy-on-write applied with copy_block, rows written per
// layer, attention over the paged cache. Every result must equal attention over the same
// sequence kept contiguously, bit for bit.
TEST(PagedKVCache, ForkedSamplesAttendLikeContiguousCaches) {
  const int64_t heads = 4, kv_heads = 2, d = 8, layers = 2;
  const ModelConfig c = tiny_config(layers, kv_heads, d);
  BlockManager blocks(12, 4);
  PagedKVCache cache(c, kv_heads, blocks.num_blocks(), blocks.block_size());
  const int64_t row = cache.row_size();
  struct Sample {
    BlockTable table;
    std::vector<std::vector<float>> k, v;  // per layer, contiguous, for the comparison
  };
  auto step = [&](Sample& s, int64_t n, uint32_t seed) {
    for (const BlockCopy& copy : blocks.append(s.table, int32_t(n)))
      cache.copy_block(copy.src, copy.dst);
    const int64_t first = s.table.num_tokens - n;
    const auto q = random_floats(size_t(n * heads * d), seed);
    for (int64_t layer = 0; layer < layers; ++layer) {
      const auto k = random_floats(size_t(n * row), seed + 1 + uint32_t(layer));
      const auto v = random_floats(size_t(n * row), seed + 11 + uint32_t(layer));
      cache.write(layer, s.table.blocks, first, n, k.data(), v.data());
      auto& ck = s.k[size_t(layer)];
      auto& cv = s.v[size_t(layer)];
      ck.insert(ck.end(), k.begin(), k.end());
      cv.insert(cv.end(), v.begin(), v.end());
      const cpu::AttentionShape shape{n, s.table.num_tokens, heads, kv_heads, d, row};
      std::vector<float> want(q.size()), got(q.size());
      cpu::causal_attention(q.data(), ck.data(), cv.data(), shape, want.data());
      cpu::causal_attention_paged(q.data(), cache.keys(layer), cache.values(layer),
                                  s.table.blocks.data(), cache.block_size(), shape, got.data());
      ASSERT_EQ(want, got) << "layer " << layer << " at " << s.table.num_tokens << " tokens";
    }
  };
  Sample a{{}, std::vector<std::vector<float>>(layers), std::vector<std::vector<float>>(layers)};
  step(a, 7, 100);  // prompt: one full block and a partial one
  Sample b{blocks.fork(a.table), a.k, a.v};
  for (int i = 0; i < 6; ++i) {  // both decode; the first to write copies the shared partial block
    step(a, 1, 200 + 40 * uint32_t(i));
    step(b, 1, 220 + 40 * uint32_t(i));
  }
  EXPECT_EQ(a.table.blocks[0], b.table.blocks[0]);  // the full prompt block stays shared
  EXPECT_NE(a.table.blocks[1], b.table.blocks[1]);
  step(b, 9, 900);  // a prompt-sized chunk after the past
  blocks.free(a.table);
  blocks.free(b.table);
  EXPECT_EQ(blocks.num_free(), blocks.num_blocks());
}

}  // namespace
}  // namespace dsmath
