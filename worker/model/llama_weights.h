// One rank's weights of a LlamaForCausalLM, bound by name to the tensors of a Checkpoint and
// cut as TpLayout says. Row blocks (column-parallel and vocab-parallel layers) are views
// straight into the memory-mapped checkpoint, so a rank only ever touches its own pages;
// column blocks (row-parallel o_proj / down_proj) are copied once into memory of the rank's
// own, after which the mapped pages are released. Where the backend keeps a packed copy of a
// matrix (CPU, AVX512-BF16), the mapped pages are released too, and a column block's copy is
// dropped once packed. Shapes are checked against config.json
// when binding (the error names tensor and file).
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "kernels/weight_view.h"
#include "worker/model/backend.h"
#include "worker/model/tp_layout.h"

namespace dsmath {

struct LayerWeights {
  NormWeight input_norm;
  StackedWeights qkv_proj;  // q_proj, k_proj, v_proj
  WeightView o_proj;
  NormWeight post_attention_norm;
  StackedWeights gate_up_proj;  // gate_proj, up_proj
  WeightView down_proj;
};

struct LlamaWeights {
  WeightView embed_tokens;           // [local_vocab, hidden]; first pipeline stage only
  std::vector<LayerWeights> layers;  // this stage's layers, from its first
  NormWeight final_norm;             // last stage only
  WeightView lm_head;  // [local_vocab, hidden], last stage only; the embedding when tied

  // Column-block copies this rank owns (empty at tp 1).
  std::vector<std::vector<std::byte>> owned;

  // Layers [first_layer, end_layer); the embedding when `embedding`, the final norm and
  // lm_head when `head` (a pipeline stage binds only what it runs).
  static LlamaWeights bind(const Checkpoint& checkpoint, const TpLayout& layout, Backend& backend,
                           int64_t first_layer, int64_t end_layer, bool embedding, bool head);

  // Bytes of this rank's shard (the lm_head counted once when tied to the embedding).
  size_t bytes(const ModelConfig& config) const;

  // The host bytes a decode step reads, as the kernels read them (a matrix's packed copy where
  // the backend keeps one): every matrix and norm but the embedding table, which a step reads a
  // few rows of (unless it is the head). For benchmarks that set a step against a plain read.
  std::vector<std::span<const std::byte>> step_reads(const ModelConfig& config) const;
};

}  // namespace dsmath
