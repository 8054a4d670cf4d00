// The CPU kernels allocate nothing per call once warm (issue 9: scratch is per thread, grown
// and never shrunk). This binary replaces the global operator new with one that counts, warms
// every kernel up at a shape, then calls it again at that shape and expects no new allocation.
// OpenMP's own thread pool allocates through malloc, which is not counted.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

#include "common/core/dtype.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "tests/support/random_floats.h"

namespace {
std::atomic<long> g_allocations{0};
}

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}

namespace dsmath::cpu {
namespace {

using dsmath::testing::random_floats;

// Allocations made by the second and third of three calls of fn.
template <class Fn>
long allocations_once_warm(Fn fn) {
  fn();
  const long before = g_allocations.load();
  fn();
  fn();
  return g_allocations.load() - before;
}

std::vector<uint16_t> as_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

TEST(NoAllocationPerCall, LinearOnEveryPathAndChunked) {
  const int64_t n = 96, k = 512;
  const auto x = random_floats(size_t(16 * k), 1);
  const auto w = as_bf16(random_floats(size_t(n * k), 2));
  const WeightView view{w.data(), DType::BF16, n, k};
  std::vector<float> y(size_t(16 * n));
  for (LinearPath path : {LinearPath::Portable, LinearPath::Avx2, LinearPath::Avx512,
                          LinearPath::Avx512Bf16, LinearPath::Amx}) {
    if (!linear_path_supported(path)) continue;
    for (int64_t m : {1, 16}) {
      EXPECT_EQ(0, allocations_once_warm(
                       [&] { linear_chunked_on_path(path, x.data(), m, view, 8, y.data()); }))
          << "path " << int(path) << " m " << m;
    }
  }
  if (!linear_path_supported(LinearPath::Avx512Bf16)) return;
  const auto panels = detail::pack_bf16_panels(view, 8);  // as the CPU backend holds weights
  const WeightView packed{nullptr, DType::BF16, n, k, panels.get()};
  for (int64_t m : {1, 16})
    EXPECT_EQ(0, allocations_once_warm([&] {
                linear_chunked_on_path(LinearPath::Avx512Bf16, x.data(), m, packed, 8, y.data());
              }))
        << "packed panels, m " << m;
}

TEST(NoAllocationPerCall, NormRopeSiluEmbedding) {
  const int64_t rows = 8, dim = 256, heads = 4, d = 64;
  const auto x = random_floats(size_t(rows * dim), 3);
  const auto gamma = as_bf16(random_floats(size_t(dim), 4));
  std::vector<float> y(x.size()), q = x;
  EXPECT_EQ(0, allocations_once_warm([&] {
              rms_norm(x.data(), rows, dim, gamma.data(), DType::BF16, 1e-6f, y.data());
            }));
  const RopeTable table(d, 10000.0, 1.0);
  const std::vector<int32_t> positions{0, 1, 2, 3, 4, 5, 6, 7};
  EXPECT_EQ(0, allocations_once_warm(
                   [&] { apply_rope(q.data(), rows, heads, positions.data(), table); }));
  EXPECT_EQ(0, allocations_once_warm([&] { silu_mul(x.data(), x.data(), rows * dim, y.data()); }));
  const WeightView embed{gamma.data(), DType::BF16, 4, dim / 4};
  const std::vector<int32_t> ids{3, 0, 2};
  EXPECT_EQ(0, allocations_once_warm([&] { embedding_lookup(embed, ids.data(), 3, y.data()); }));
}

TEST(NoAllocationPerCall, AttentionPrefillAndDecodeF32AndBf16Cache) {
  const int64_t heads = 8, kv_heads = 2, d = 64, len = 40, block = 16;
  const int64_t stride = kv_heads * d, blocks = (len + block - 1) / block;
  const auto q = random_floats(size_t(len * heads * d), 5);
  const auto kv = random_floats(size_t(blocks * block * stride), 6);
  const auto kv16 = as_bf16(kv);
  std::vector<int32_t> table(static_cast<size_t>(blocks));
  for (int64_t b = 0; b < blocks; ++b) table[size_t(b)] = int32_t(blocks - 1 - b);
  std::vector<float> out(q.size());
  for (int64_t q_len : {len, int64_t(1)}) {
    const AttentionShape s{q_len, len, heads, kv_heads, d, stride};
    EXPECT_EQ(0, allocations_once_warm(
                     [&] { causal_attention(q.data(), kv.data(), kv.data(), s, out.data()); }))
        << "contiguous, q_len " << q_len;
    // head_dim 12 (not a multiple of 8): the per-query path and its own state
    const AttentionShape odd{q_len, len, heads, kv_heads, 12, stride};
    EXPECT_EQ(0, allocations_once_warm(
                     [&] { causal_attention(q.data(), kv.data(), kv.data(), odd, out.data()); }))
        << "head_dim 12, q_len " << q_len;
    EXPECT_EQ(0, allocations_once_warm([&] {
                causal_attention_paged(q.data(), kv.data(), kv.data(), table.data(), block, s,
                                       out.data());
              }))
        << "q_len " << q_len;
    EXPECT_EQ(0, allocations_once_warm([&] {
                causal_attention_paged(q.data(), kv16.data(), kv16.data(), table.data(), block, s,
                                       out.data());
              }))
        << "bf16, q_len " << q_len;
  }
}

TEST(NoAllocationPerCall, SharedDecodeF32AndBf16Cache) {
  // Three decodes that share their first 64 positions (one chunk), then 6 to 40 keys of their own.
  const int64_t heads = 8, kv_heads = 2, d = 64, block = 16, stride = kv_heads * d, blocks = 13;
  const auto q = random_floats(size_t(3 * heads * d), 7);
  const auto kv = random_floats(size_t(blocks * block * stride), 8);
  const auto kv16 = as_bf16(kv);
  std::vector<int32_t> a{0, 1, 2, 3, 4, 5, 6}, b{0, 1, 2, 3, 7, 8, 9}, c{0, 1, 2, 3, 10, 11, 12};
  const int32_t* tables[] = {a.data(), b.data(), c.data()};
  const int64_t kv_lens[] = {104, 70, 112};
  std::vector<float> out(q.size());
  float* outs[] = {out.data(), out.data() + heads * d, out.data() + 2 * heads * d};
  const SharedDecode sd{q.data(), tables, kv_lens, outs, 3, 64, block};
  const AttentionShape shape{1, 1, heads, kv_heads, d, stride};
  EXPECT_EQ(
      0, allocations_once_warm([&] { decode_attention_shared(sd, kv.data(), kv.data(), shape); }));
  EXPECT_EQ(0, allocations_once_warm(
                   [&] { decode_attention_shared(sd, kv16.data(), kv16.data(), shape); }))
      << "bf16";
}

}  // namespace
}  // namespace dsmath::cpu
