// causal_attention_paged against causal_attention on the same rows laid out contiguously:
// bit-for-bit equal, whatever the block table's order, the block size or the thread count;
// a bf16 pool gives the bits of f32 attention over the same rows rounded to bf16.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "common/core/dtype.h"
#include "common/core/error.h"
#include "kernels/cpu/attention.h"
#include "tests/support/random_floats.h"

namespace dsmath::cpu {
namespace {

using dsmath::testing::random_floats;

// kv_len contiguous rows scattered into a pool of blocks through a shuffled table. Every slot
// no row was written to holds NaN, so reading one would poison the output.
struct Paged {
  std::vector<float> k, v;
  std::vector<int32_t> table;
};

Paged scatter(const std::vector<float>& k, const std::vector<float>& v, int64_t kv_len,
              int64_t stride, int64_t block_size, uint32_t seed) {
  const int64_t used = (kv_len + block_size - 1) / block_size, pool = used + 3;
  std::vector<int32_t> ids(static_cast<size_t>(pool));
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  Paged p;
  p.table.assign(ids.begin(), ids.begin() + used);
  p.k.assign(size_t(pool * block_size * stride), NAN);
  p.v = p.k;
  for (int64_t t = 0; t < kv_len; ++t) {
    const int64_t slot = (p.table[size_t(t / block_size)] * block_size + t % block_size) * stride;
    std::copy_n(k.begin() + t * stride, stride, p.k.begin() + slot);
    std::copy_n(v.begin() + t * stride, stride, p.v.begin() + slot);
  }
  return p;
}

struct Case {
  int64_t q_len, kv_len, n_heads, n_kv_heads, head_dim, pad, block_size;
};

void expect_same_bits(const Case& c, uint32_t seed) {
  SCOPED_TRACE(cat("q_len ", c.q_len, " kv_len ", c.kv_len, " heads ", c.n_heads, "/", c.n_kv_heads,
                   " d ", c.head_dim, " pad ", c.pad, " block ", c.block_size));
  const int64_t stride = c.n_kv_heads * c.head_dim + c.pad;
  const AttentionShape s{c.q_len, c.kv_len, c.n_heads, c.n_kv_heads, c.head_dim, stride};
  const auto q = random_floats(size_t(c.q_len * c.n_heads * c.head_dim), seed, 2.0f);
  const auto k = random_floats(size_t(c.kv_len * stride), seed + 1, 2.0f);
  const auto v = random_floats(size_t(c.kv_len * stride), seed + 2);
  const Paged p = scatter(k, v, c.kv_len, stride, c.block_size, seed + 3);
  std::vector<float> want(q.size()), got(q.size(), NAN);
  causal_attention(q.data(), k.data(), v.data(), s, want.data());
  causal_attention_paged(q.data(), p.k.data(), p.v.data(), p.table.data(), c.block_size, s,
                         got.data());
  ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
}

TEST(PagedAttention, SameBitsAsContiguousMhaAndGqa) {
  uint32_t seed = 1000;
  for (auto [heads, kv_heads] : {std::pair<int64_t, int64_t>{4, 4}, {8, 2}, {6, 1}})
    for (int64_t d : {8, 13, 128})
      for (auto [q_len, kv_len] : {std::pair<int64_t, int64_t>{1, 1},
                                   {1, 16},  // exactly one full block
                                   {1, 17},  // one slot into the second block
                                   {4, 4},   // prefill inside one partial block
                                   {5, 70},  // chunk after 65 past tokens
                                   {17, 33},
                                   {2, 200}})  // several 64-key chunks
        for (int64_t pad : {0, 3})
          expect_same_bits({q_len, kv_len, heads, kv_heads, d, pad, 16}, ++seed);
}

// Block sizes that do not divide the kernel's 64-key chunks, and 1 (every row its own block).
TEST(PagedAttention, SameBitsForAnyBlockSize) {
  uint32_t seed = 2000;
  for (int64_t block : {1, 5, 16, 64, 100})
    for (auto [q_len, kv_len] : {std::pair<int64_t, int64_t>{1, 99}, {7, 130}, {3, 3}})
      expect_same_bits({q_len, kv_len, 8, 2, 32, 0, block}, ++seed);
}

// A bf16 cache (--kv-dtype bf16) holds rows rounded to bf16; attention widens them exactly,
// so the result is f32 attention over the rounded rows, bit for bit.
TEST(PagedAttention, Bf16PoolIsF32AttentionOverTheRoundedRows) {
  uint32_t seed = 3000;
  for (const Case& c : {Case{1, 150, 12, 4, 32, 0, 16}, Case{9, 40, 8, 8, 128, 3, 16},
                        Case{5, 70, 6, 1, 13, 0, 5}}) {
    SCOPED_TRACE(cat("q_len ", c.q_len, " kv_len ", c.kv_len, " d ", c.head_dim));
    const int64_t stride = c.n_kv_heads * c.head_dim + c.pad;
    const AttentionShape s{c.q_len, c.kv_len, c.n_heads, c.n_kv_heads, c.head_dim, stride};
    const auto q = random_floats(size_t(c.q_len * c.n_heads * c.head_dim), ++seed, 2.0f);
    auto k = random_floats(size_t(c.kv_len * stride), ++seed, 2.0f);
    auto v = random_floats(size_t(c.kv_len * stride), ++seed);
    for (auto* rows : {&k, &v})
      for (float& x : *rows) x = bf16_to_f32(f32_to_bf16(x));
    const Paged p = scatter(k, v, c.kv_len, stride, c.block_size, ++seed);
    std::vector<uint16_t> kb(p.k.size()), vb(p.v.size());
    for (size_t i = 0; i < kb.size(); ++i) {
      kb[i] = f32_to_bf16(p.k[i]);  // NaN in unused slots stays NaN
      vb[i] = f32_to_bf16(p.v[i]);
    }
    std::vector<float> want(q.size()), got(q.size(), NAN);
    causal_attention(q.data(), k.data(), v.data(), s, want.data());
    causal_attention_paged(q.data(), kb.data(), vb.data(), p.table.data(), c.block_size, s,
                           got.data());
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)));
  }
}

TEST(PagedAttention, SameBitsForAnyThreadCount) {
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 3, 16}) {
    SCOPED_TRACE(cat("threads ", threads));
    omp_set_num_threads(threads);
    expect_same_bits({1, 150, 12, 4, 32, 0, 16}, 31);
    expect_same_bits({9, 40, 12, 4, 32, 0, 16}, 32);
  }
  omp_set_num_threads(saved);
}

// A partially filled last block whose unwritten slots hold garbage: only kv_len rows count.
TEST(PagedAttention, UnwrittenSlotsOfTheLastBlockAreNeverRead) {
  const int64_t kv_len = 21, block = 16, heads = 2, d = 8, stride = heads * d;
  const auto q = random_floats(size_t(heads * d), 41);
  const auto k = random_floats(size_t(kv_len * stride), 42);
  const auto v = random_floats(size_t(kv_len * stride), 43);
  Paged p = scatter(k, v, kv_len, stride, block, 44);
  for (int64_t slot = kv_len % block; slot < block; ++slot)
    for (int64_t c = 0; c < stride; ++c) {
      const int64_t at = (p.table.back() * block + slot) * stride + c;
      p.k[size_t(at)] = 1e30f;
      p.v[size_t(at)] = 1e30f;
    }
  const AttentionShape s{1, kv_len, heads, heads, d, stride};
  std::vector<float> want(q.size()), got(q.size());
  causal_attention_reference(q.data(), k.data(), v.data(), s, want.data());
  causal_attention_paged(q.data(), p.k.data(), p.v.data(), p.table.data(), block, s, got.data());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
}

// Two sequences sharing their first block (a forked prompt) read the same prefix rows.
TEST(PagedAttention, SequencesSharingPrefixBlocks) {
  const int64_t block = 4, heads = 4, kv_heads = 2, d = 8, stride = kv_heads * d;
  const auto pool_k = random_floats(size_t(3 * block * stride), 51, 2.0f);
  const auto pool_v = random_floats(size_t(3 * block * stride), 52);
  const auto q = random_floats(size_t(heads * d), 53, 2.0f);
  const int32_t table_a[] = {2, 0}, table_b[] = {2, 1};  // block 2 shared
  const AttentionShape s{1, 6, heads, kv_heads, d, stride};
  for (const int32_t* table : {table_a, table_b}) {
    std::vector<float> k, v;
    for (int64_t t = 0; t < 6; ++t) {
      const int64_t at = (table[t / block] * block + t % block) * stride;
      k.insert(k.end(), pool_k.begin() + at, pool_k.begin() + at + stride);
      v.insert(v.end(), pool_v.begin() + at, pool_v.begin() + at + stride);
    }
    std::vector<float> want(q.size()), got(q.size());
    causal_attention(q.data(), k.data(), v.data(), s, want.data());
    causal_attention_paged(q.data(), pool_k.data(), pool_v.data(), table, block, s, got.data());
    EXPECT_EQ(want, got) << "table starting " << table[0] << ", " << table[1];
  }
}

// n samples forked from one prompt: a pool whose first `shared` blocks every table starts with,
// then blocks of each sequence's own. Each query of decode_attention_shared must have the bits of
// causal_attention_paged over its table alone, for any count (across blocks of eight), suffix
// lengths (none, inside the next chunk, chunks beyond), thread count and element type.
template <typename T>
void expect_shared_decode_is_each_alone(int64_t count, int64_t head_dim, int64_t shared_keys,
                                        uint32_t seed) {
  SCOPED_TRACE(
      cat("count ", count, " d ", head_dim, " shared ", shared_keys, " bf16 ", sizeof(T) == 2));
  const int64_t block = 16, heads = 8, kv_heads = 2, stride = kv_heads * head_dim;
  const int64_t shared_blocks = (shared_keys + 40) / block;  // more full blocks than shared_keys
  std::vector<int64_t> kv_lens;
  for (int64_t i = 0; i < count; ++i)
    kv_lens.push_back(shared_blocks * block + 1 + (i * 37) % 150);  // 1 to 150 keys of its own
  std::vector<std::vector<int32_t>> tables(static_cast<size_t>(count));
  int32_t next = 0;
  for (int64_t b = 0; b < shared_blocks; ++b)
    for (auto& t : tables) t.push_back(next + int32_t(b));
  next += int32_t(shared_blocks);
  for (size_t i = 0; i < tables.size(); ++i)
    while (int64_t(tables[i].size()) * block < kv_lens[i]) tables[i].push_back(next++);
  const auto k32 = random_floats(size_t(next * block * stride), seed, 2.0f);
  const auto v32 = random_floats(size_t(next * block * stride), seed + 1);
  std::vector<T> k(k32.size()), v(v32.size());
  for (size_t i = 0; i < k.size(); ++i) {
    if constexpr (sizeof(T) == 2) {
      k[i] = f32_to_bf16(k32[i]);
      v[i] = f32_to_bf16(v32[i]);
    } else {
      k[i] = k32[i];
      v[i] = v32[i];
    }
  }
  const int64_t width = heads * head_dim;
  const auto q = random_floats(size_t(count * width), seed + 2, 2.0f);
  std::vector<float> want(q.size()), got(q.size(), NAN);
  std::vector<const int32_t*> table_ptrs;
  std::vector<float*> outs;
  for (int64_t i = 0; i < count; ++i) {
    table_ptrs.push_back(tables[size_t(i)].data());
    outs.push_back(got.data() + i * width);
    causal_attention_paged(q.data() + i * width, k.data(), v.data(), tables[size_t(i)].data(),
                           block, {1, kv_lens[size_t(i)], heads, kv_heads, head_dim, stride},
                           want.data() + i * width);
  }
  const SharedDecode sd{q.data(), table_ptrs.data(), kv_lens.data(), outs.data(),
                        count,    shared_keys,       block};
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2, 5}) {
    omp_set_num_threads(threads);
    std::fill(got.begin(), got.end(), NAN);
    decode_attention_shared(sd, k.data(), v.data(), {1, 1, heads, kv_heads, head_dim, stride});
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
        << "threads " << threads;
  }
  omp_set_num_threads(saved);
}

TEST(PagedAttention, SharedDecodeGivesEachSequenceItsBitsAlone) {
  uint32_t seed = 300;
  for (int64_t count : {2, 8, 11})
    for (int64_t d : {16, 8, 128, 13})  // 13: no blocked kernel, one sequence at a time
      for (int64_t shared : {64, 192}) {
        expect_shared_decode_is_each_alone<float>(count, d, shared, ++seed);
        expect_shared_decode_is_each_alone<uint16_t>(count, d, shared, ++seed);
      }
}

TEST(PagedAttention, SharedDecodeRejectsUnalignedOrLongerSharedKeys) {
  float buf[64] = {};
  const int32_t table[] = {0};
  const int32_t* tables[] = {table, table};
  float* outs[] = {buf, buf};
  const int64_t short_lens[] = {64, 10};
  const int64_t lens[] = {100, 100};
  EXPECT_THROW(
      decode_attention_shared({buf, tables, lens, outs, 2, 48, 64}, buf, buf, {1, 1, 1, 1, 4, 4}),
      Error);  // 48 is not a whole chunk
  EXPECT_THROW(decode_attention_shared({buf, tables, short_lens, outs, 2, 64, 64}, buf, buf,
                                       {1, 1, 1, 1, 4, 4}),
               Error);  // the second holds 10 positions
}

TEST(PagedAttention, RejectsBadShapesAndBlockSize) {
  float buf[64] = {};
  const int32_t table[] = {0};
  EXPECT_THROW(causal_attention_paged(buf, buf, buf, table, 4, {2, 1, 1, 1, 4, 4}, buf), Error);
  EXPECT_THROW(causal_attention_paged(buf, buf, buf, table, 4, {1, 1, 3, 2, 4, 8}, buf), Error);
  EXPECT_THROW(causal_attention_paged(buf, buf, buf, table, 0, {1, 1, 1, 1, 4, 4}, buf), Error);
  EXPECT_THROW(causal_attention_paged(buf, buf, buf, nullptr, 4, {1, 1, 1, 1, 4, 4}, buf), Error);
}

}  // namespace
}  // namespace dsmath::cpu
