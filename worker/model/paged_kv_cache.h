// The KV storage of every sequence in the engine: a pool of fixed-size blocks per layer, keys
// and values each laid out [num_blocks][block_size][local_kv_heads * head_dim]. A sequence's
// position p lives in block table[p / block_size], slot p % block_size; the tables come from
// the engine's BlockManager, which owns which block belongs to whom. Each tensor-parallel rank
// stores only its own kv heads, so the head count is a parameter, not read from the config.
//
// f32, not the checkpoint's bf16: activations are f32 throughout and the golden tests compare
// against HF transformers run in float32, so a narrower cache would shift the logits.
//
// Tables are plain spans of block ids so this layer does not depend on the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/checkpoint/model_config.h"

namespace dsmath {

class PagedKVCache {
 public:
  PagedKVCache(const ModelConfig& config, int64_t local_kv_heads, int32_t num_blocks,
               int32_t block_size = 16);

  // Bytes one block takes over all layers, keys and values.
  static int64_t bytes_per_block(const ModelConfig& config, int64_t local_kv_heads,
                                 int32_t block_size = 16);
  // How many blocks fit in `bytes` (at least 0, at most INT32_MAX).
  static int32_t blocks_for_bytes(const ModelConfig& config, int64_t local_kv_heads, int64_t bytes,
                                  int32_t block_size = 16);

  int64_t num_layers() const { return num_layers_; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t row_size() const { return row_size_; }  // local_kv_heads * head_dim floats per slot

  // Layer `layer`'s pools, [num_blocks][block_size][row_size]: what causal_attention_paged
  // takes as k_blocks / v_blocks, with kv_row_stride = row_size().
  float* keys(int64_t layer) { return layer_base(layer, 0); }
  float* values(int64_t layer) { return layer_base(layer, 1); }
  const float* keys(int64_t layer) const { return layer_base(layer, 0); }
  const float* values(int64_t layer) const { return layer_base(layer, 1); }

  // Stores n rows of keys and values (each [n][row_size], contiguous) of one layer at the
  // sequence's positions first_pos .. first_pos + n - 1. The table must already cover them.
  void write(int64_t layer, std::span<const int32_t> table, int64_t first_pos, int64_t n,
             const float* k, const float* v);

  // Where the key (value) row of position `pos` is.
  const float* key_row(int64_t layer, std::span<const int32_t> table, int64_t pos) const;
  const float* value_row(int64_t layer, std::span<const int32_t> table, int64_t pos) const;

  // Copies every slot of block src into block dst, in every layer, keys and values: the
  // copy-on-write the BlockManager asks for when a shared partial block is appended to.
  void copy_block(int32_t src, int32_t dst);

 private:
  float* layer_base(int64_t layer, int kv) const;
  int64_t slot_offset(std::span<const int32_t> table, int64_t pos) const;
  void check_block(int32_t block) const;

  int64_t num_layers_;
  int32_t num_blocks_;
  int32_t block_size_;
  int64_t row_size_;
  int64_t layer_elems_;  // num_blocks * block_size * row_size: one of K or V of one layer
  // [layer][keys, values][num_blocks][block_size][row_size]. Left uninitialised on purpose:
  // pages are committed only as blocks are first written, so RSS follows the KV actually used,
  // and only written slots are ever read.
  std::unique_ptr<float[]> data_;
};

}  // namespace dsmath
