// How one rank's share of a LLaMA model is cut for tensor parallelism (Megatron):
//   q/k/v_proj, gate/up_proj  column-parallel: rank r holds a block of output rows
//                             (whole attention heads; KV heads replicated when tp > kv heads)
//   o_proj, down_proj         row-parallel: rank r holds the matching block of input columns
//   embed_tokens, lm_head     vocab-parallel: rank r holds vocab rows [vocab_begin, +local_vocab)
//   norms                     replicated
#pragma once

#include <cstdint>

#include "common/checkpoint/model_config.h"

namespace dsmath {

struct TpLayout {
  int64_t tp_size = 1;
  int64_t tp_rank = 0;
  int64_t local_heads = 0;     // query heads on this rank
  int64_t local_kv_heads = 0;  // KV heads on this rank
  int64_t kv_head_begin = 0;   // first global KV head on this rank
  int64_t local_intermediate = 0;
  int64_t local_vocab = 0;
  int64_t vocab_begin = 0;

  // Throws Error naming the config field that `tp_size` does not divide.
  static TpLayout make(const ModelConfig& config, int64_t tp_size, int64_t tp_rank);
};

// The row-parallel layers sum K in kCanonicalChunks ranges added by a fixed tree, whatever the
// tp (LlamaModel::row_parallel_linear): a rank's product sums its kCanonicalChunks / tp chunks.
// 0 where tp or the rank's columns do not split that way (a plain product and all-reduce).
inline constexpr int64_t kCanonicalChunks = 8;
int64_t row_parallel_chunks(int64_t tp_size, int64_t local_cols);

}  // namespace dsmath
