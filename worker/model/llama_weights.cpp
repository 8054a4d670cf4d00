#include "worker/model/llama_weights.h"

#include <string>

namespace dsmath {
namespace {

WeightView matrix(const Checkpoint& ckpt, const std::string& name, int64_t rows, int64_t cols) {
  const TensorInfo& t = ckpt.tensor(name, {rows, cols});
  return WeightView{t.data, t.dtype, rows, cols};
}

NormWeight vector(const Checkpoint& ckpt, const std::string& name, int64_t size) {
  const TensorInfo& t = ckpt.tensor(name, {size});
  return NormWeight{t.data, t.dtype};
}

}  // namespace

LlamaWeights LlamaWeights::bind(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  const int64_t hidden = c.hidden_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;

  LlamaWeights w;
  w.embed_tokens = matrix(ckpt, "model.embed_tokens.weight", c.vocab_size, hidden);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights l;
    l.input_norm = vector(ckpt, p + "input_layernorm.weight", hidden);
    l.q_proj = matrix(ckpt, p + "self_attn.q_proj.weight", q_dim, hidden);
    l.k_proj = matrix(ckpt, p + "self_attn.k_proj.weight", kv_dim, hidden);
    l.v_proj = matrix(ckpt, p + "self_attn.v_proj.weight", kv_dim, hidden);
    l.o_proj = matrix(ckpt, p + "self_attn.o_proj.weight", hidden, q_dim);
    l.post_attention_norm = vector(ckpt, p + "post_attention_layernorm.weight", hidden);
    l.gate_proj = matrix(ckpt, p + "mlp.gate_proj.weight", c.intermediate_size, hidden);
    l.up_proj = matrix(ckpt, p + "mlp.up_proj.weight", c.intermediate_size, hidden);
    l.down_proj = matrix(ckpt, p + "mlp.down_proj.weight", hidden, c.intermediate_size);
    w.layers.push_back(l);
  }
  w.final_norm = vector(ckpt, "model.norm.weight", hidden);
  // Tied checkpoints usually omit lm_head.weight; some still write it (same values).
  if (c.tie_word_embeddings && !ckpt.has("lm_head.weight")) {
    w.lm_head = w.embed_tokens;
  } else {
    w.lm_head = matrix(ckpt, "lm_head.weight", c.vocab_size, hidden);
  }
  return w;
}

}  // namespace dsmath
