// The weights of a LlamaForCausalLM, bound by name to the tensors of a Checkpoint.
// Nothing is copied: every view points into the memory-mapped checkpoint files, and each
// shape is checked against config.json when binding (the error names tensor and file).
#pragma once

#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "kernels/weight_view.h"

namespace dsmath {

struct NormWeight {
  const void* data = nullptr;
  DType dtype = DType::BF16;
};

struct LayerWeights {
  NormWeight input_norm;
  WeightView q_proj, k_proj, v_proj, o_proj;
  NormWeight post_attention_norm;
  WeightView gate_proj, up_proj, down_proj;
};

struct LlamaWeights {
  WeightView embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  NormWeight final_norm;
  WeightView lm_head;  // [vocab, hidden]; the embedding when tie_word_embeddings

  static LlamaWeights bind(const Checkpoint& checkpoint);
};

}  // namespace dsmath
