#include "worker/model/llama.h"

#include <cstring>

#include "common/core/error.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"

namespace dsmath {
namespace {

void rms_norm(const std::vector<float>& x, int64_t tokens, int64_t dim, const NormWeight& gamma,
              float eps, std::vector<float>& out) {
  cpu::rms_norm(x.data(), tokens, dim, gamma.data, gamma.dtype, eps, out.data());
}

void linear(const std::vector<float>& x, int64_t tokens, const WeightView& w,
            std::vector<float>& out) {
  cpu::linear(x.data(), tokens, w, out.data());
}

void resize(std::vector<float>& v, int64_t n) {
  if (int64_t(v.size()) < n) v.resize(size_t(n));
}

}  // namespace

LlamaModel::LlamaModel(const Checkpoint& checkpoint)
    : config_(checkpoint.config()),
      weights_(LlamaWeights::bind(checkpoint)),
      rope_(config_.head_dim, config_.rope_theta, config_.rope_scaling_factor) {}

std::vector<float> LlamaModel::forward(std::span<const SequenceChunk> batch, LogitsFor which) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;

  // Token ids and positions of the whole batch, sequence after sequence.
  std::vector<int32_t> ids;
  std::vector<int64_t> first_position;
  positions_.clear();
  for (const SequenceChunk& s : batch) {
    DSMATH_CHECK(!s.tokens.empty(), "forward: a sequence chunk has no tokens");
    const int64_t first = s.cache->append(int64_t(s.tokens.size()));
    first_position.push_back(first);
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      ids.push_back(s.tokens[i]);
      positions_.push_back(int32_t(first + int64_t(i)));
    }
  }
  const int64_t tokens = int64_t(ids.size());
  for (auto* buf : {&x_, &normed_, &proj_}) resize(*buf, tokens * hidden);

  cpu::embedding_lookup(weights_.embed_tokens, ids.data(), tokens, x_.data());
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    const LayerWeights& w = weights_.layers[size_t(layer)];
    attention_block(w, layer, batch, first_position, tokens);
    mlp_block(w, tokens);
  }

  // Final norm, then lm_head on the rows whose logits are wanted.
  std::vector<float> rows;
  if (which == LogitsFor::kAllTokens) {
    rms_norm(x_, tokens, hidden, weights_.final_norm, float(c.rms_norm_eps), normed_);
    rows.assign(normed_.begin(), normed_.begin() + tokens * hidden);
  } else {
    int64_t end = 0;
    for (const SequenceChunk& s : batch) {
      end += int64_t(s.tokens.size());
      const float* last = x_.data() + (end - 1) * hidden;
      rows.insert(rows.end(), last, last + hidden);
    }
    std::vector<float> normed(rows.size());
    cpu::rms_norm(rows.data(), int64_t(batch.size()), hidden, weights_.final_norm.data,
                  weights_.final_norm.dtype, float(c.rms_norm_eps), normed.data());
    rows.swap(normed);
  }
  const int64_t n_rows = int64_t(rows.size()) / hidden;
  std::vector<float> logits(size_t(n_rows * c.vocab_size));
  cpu::linear(rows.data(), n_rows, weights_.lm_head, logits.data());
  return logits;
}

// x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rms_norm(x)
void LlamaModel::attention_block(const LayerWeights& w, int64_t layer,
                                 std::span<const SequenceChunk> batch,
                                 std::span<const int64_t> first_position, int64_t tokens) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  resize(q_, tokens * q_dim);
  resize(k_, tokens * kv_dim);
  resize(v_, tokens * kv_dim);
  resize(attn_, tokens * q_dim);

  rms_norm(x_, tokens, hidden, w.input_norm, float(c.rms_norm_eps), normed_);
  linear(normed_, tokens, w.q_proj, q_);
  linear(normed_, tokens, w.k_proj, k_);
  linear(normed_, tokens, w.v_proj, v_);
  cpu::apply_rope(q_.data(), tokens, c.num_attention_heads, positions_.data(), rope_);
  cpu::apply_rope(k_.data(), tokens, c.num_key_value_heads, positions_.data(), rope_);

  int64_t row = 0;  // first token of the current sequence in the batch
  for (size_t s = 0; s < batch.size(); ++s) {
    KVCache& cache = *batch[s].cache;
    const int64_t n = int64_t(batch[s].tokens.size());
    const int64_t first = first_position[s];
    std::memcpy(cache.keys(layer) + first * kv_dim, k_.data() + row * kv_dim,
                size_t(n * kv_dim) * sizeof(float));
    std::memcpy(cache.values(layer) + first * kv_dim, v_.data() + row * kv_dim,
                size_t(n * kv_dim) * sizeof(float));
    const cpu::AttentionShape shape{
        n, first + n, c.num_attention_heads, c.num_key_value_heads, c.head_dim, kv_dim};
    cpu::causal_attention(q_.data() + row * q_dim, cache.keys(layer), cache.values(layer), shape,
                          attn_.data() + row * q_dim);
    row += n;
  }

  linear(attn_, tokens, w.o_proj, proj_);
  cpu::add(x_.data(), proj_.data(), tokens * hidden);
}

// x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = rms_norm(x)
void LlamaModel::mlp_block(const LayerWeights& w, int64_t tokens) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  resize(gate_, tokens * inter);
  resize(up_, tokens * inter);

  rms_norm(x_, tokens, hidden, w.post_attention_norm, float(c.rms_norm_eps), normed_);
  linear(normed_, tokens, w.gate_proj, gate_);
  linear(normed_, tokens, w.up_proj, up_);
  cpu::silu_mul(gate_.data(), up_.data(), tokens * inter, gate_.data());
  linear(gate_, tokens, w.down_proj, proj_);
  cpu::add(x_.data(), proj_.data(), tokens * hidden);
}

}  // namespace dsmath
