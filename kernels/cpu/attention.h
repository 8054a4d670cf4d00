// Causal scaled-dot-product attention of the q_len newest tokens of one sequence:
//   out[i, h] = sum_{t <= p_i} softmax_t(q[i, h] . k[t, g] / sqrt(d)) v[t, g]
// where p_i = kv_len - q_len + i is query i's position and g = h / (n_heads / n_kv_heads)
// is its KV head (GQA; MHA when n_kv_heads == n_heads).
//   q:    [q_len, n_heads, head_dim]
//   k, v: kv_len rows; row t starts at k + t * kv_row_stride and holds n_kv_heads x head_dim
//   out:  [q_len, n_heads, head_dim]
// Softmax is computed in f32 with the running-max trick. Parallel over (query, head).
#pragma once

#include <cstdint>

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

void causal_attention_reference(const float* q, const float* k, const float* v,
                                const AttentionShape& s, float* out);

}  // namespace dsmath::cpu
