// Causal scaled-dot-product attention of the q_len newest tokens of one sequence:
//   out[i, h] = sum_{t <= p_i} softmax_t(q[i, h] . k[t, g] / sqrt(d)) v[t, g]
// where p_i = kv_len - q_len + i is query i's position and g = h / (n_heads / n_kv_heads)
// is its KV head (GQA; MHA when n_kv_heads == n_heads).
//   q:    [q_len, n_heads, head_dim]
//   k, v: kv_len rows; row t starts at k + t * kv_row_stride and holds n_kv_heads x head_dim
//   out:  [q_len, n_heads, head_dim]
// Softmax is computed in f32 with the running-max trick. Parallel over (block of queries, run
// of heads); a query gets the same bits whatever else is in the call.
//
// Paged variant: the kv_len rows live in fixed-size blocks of a shared pool,
//   row t of k = k_blocks + (block_table[t / block_size] * block_size + t % block_size) *
//   kv_row_stride
// (likewise v), so a sequence's cache need not be contiguous and blocks can be shared between
// sequences. Same code path as the contiguous kernel: identical bits on the same rows. The
// pool may hold bf16 rows (a bf16 KV cache): they are widened to f32 as they are read, and
// the arithmetic is the f32 kernel's.
#pragma once

#include <cstdint>

#include "kernels/cpu/simd.h"

namespace dsmath::cpu {

struct AttentionShape {
  int64_t q_len;
  int64_t kv_len;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t kv_row_stride;  // elements between consecutive positions of k (and v)
};

void causal_attention(const float* q, const float* k, const float* v, const AttentionShape& s,
                      float* out);
// causal_attention on a given instruction set (tests compare them; one at or below the CPU's).
// AVX-512 and AVX2 run the blocked kernel where head_dim is a multiple of 16 or 8; the bits differ
// between instruction sets (their sums are split into 16 or 8 lanes), never within one.
void causal_attention_on(detail::Isa isa, const float* q, const float* k, const float* v,
                         const AttentionShape& s, float* out);

// block_table holds at least ceil(kv_len / block_size) valid block ids (the caller's block
// manager guarantees it; the kernel cannot check ids against the pool size).
void causal_attention_paged(const float* q, const float* k_blocks, const float* v_blocks,
                            const int32_t* block_table, int64_t block_size, const AttentionShape& s,
                            float* out);
void causal_attention_paged(const float* q, const uint16_t* k_blocks_bf16,
                            const uint16_t* v_blocks_bf16, const int32_t* block_table,
                            int64_t block_size, const AttentionShape& s, float* out);

// Decode attention of `count` sequences, one query each, whose caches start with the same
// `shared_keys` positions in the same blocks: n samples forked from one prompt. The shared keys
// are read once for each 16 of the sequences instead of once per sequence (a batch of 64
// samples of a 2,000-token prompt otherwise reads the prompt's K and V 64 times a step). Each
// query gets exactly the bits causal_attention_paged gives it alone. shared_keys must be a
// multiple of kAttentionChunk and at most every kv_len; the caller checks the blocks are shared.
constexpr int64_t kAttentionChunk = 64;  // keys per softmax rescale: results depend on it
struct SharedDecode {
  const float* q;                      // [count][n_heads * head_dim]
  const int32_t* const* block_tables;  // count tables; the first shared_keys positions alike
  const int64_t* kv_lens;              // count cached lengths, each query's own key included
  float* const* out;                   // count rows of n_heads * head_dim
  int64_t count = 0, shared_keys = 0, block_size = 0;
};
// shape: heads, head_dim and kv_row_stride (q_len and kv_len are per sequence, in sd).
void decode_attention_shared(const SharedDecode& sd, const float* k_blocks, const float* v_blocks,
                             const AttentionShape& shape);
void decode_attention_shared(const SharedDecode& sd, const uint16_t* k_blocks_bf16,
                             const uint16_t* v_blocks_bf16, const AttentionShape& shape);

void causal_attention_reference(const float* q, const float* k, const float* v,
                                const AttentionShape& s, float* out);

}  // namespace dsmath::cpu
