#include "worker/model/tp_layout.h"

#include "common/core/error.h"

namespace dsmath {

TpLayout TpLayout::make(const ModelConfig& c, int64_t tp_size, int64_t tp_rank) {
  DSMATH_CHECK(tp_size >= 1 && tp_rank >= 0 && tp_rank < tp_size, "invalid tensor-parallel rank ",
               tp_rank, " of ", tp_size);
  auto require_divides = [&](int64_t n, const char* field) {
    DSMATH_CHECK(n % tp_size == 0, "tensor parallelism ", tp_size, " does not divide ", field,
                 " = ", n, " of config.json; use a tp (mpirun -np) that divides it");
  };
  require_divides(c.num_attention_heads, "num_attention_heads");
  require_divides(c.intermediate_size, "intermediate_size");
  require_divides(c.vocab_size, "vocab_size");

  TpLayout t;
  t.tp_size = tp_size;
  t.tp_rank = tp_rank;
  t.local_heads = c.num_attention_heads / tp_size;
  t.local_intermediate = c.intermediate_size / tp_size;
  t.local_vocab = c.vocab_size / tp_size;
  t.vocab_begin = tp_rank * t.local_vocab;
  if (c.num_key_value_heads >= tp_size) {
    require_divides(c.num_key_value_heads, "num_key_value_heads");
    t.local_kv_heads = c.num_key_value_heads / tp_size;
    t.kv_head_begin = tp_rank * t.local_kv_heads;
  } else {
    // Fewer KV heads than ranks: each rank keeps the one KV head its query heads read.
    DSMATH_CHECK(tp_size % c.num_key_value_heads == 0, "tensor parallelism ", tp_size,
                 " is not a multiple of num_key_value_heads = ", c.num_key_value_heads,
                 " of config.json, so KV heads cannot be replicated evenly");
    const int64_t group = c.num_attention_heads / c.num_key_value_heads;
    t.local_kv_heads = 1;
    t.kv_head_begin = tp_rank * t.local_heads / group;
  }
  return t;
}

int64_t row_parallel_chunks(int64_t tp_size, int64_t local_cols) {
  if (kCanonicalChunks % tp_size != 0) return 0;
  const int64_t chunks = kCanonicalChunks / tp_size;
  return local_cols % chunks == 0 ? chunks : 0;
}

}  // namespace dsmath
