// The KV storage of every sequence in the engine: a pool of fixed-size blocks per layer, keys
// and values each laid out [num_blocks][block_size][local_kv_heads * head_dim]. A sequence's
// position p lives in block table[p / block_size], slot p % block_size; the tables come from
// the engine's BlockManager, which owns which block belongs to whom. Each tensor-parallel rank
// stores only its own kv heads, so the head count is a parameter, not read from the config.
//
// f32 by default: activations are f32 throughout and the golden tests compare against HF
// transformers run in float32. bf16 (--kv-dtype bf16) halves the bytes per token, so twice the
// sequences fit, for a small change in logprobs (rows are rounded to nearest even on write;
// attention widens them back to f32).
//
// Tables are plain spans of block ids so this layer does not depend on the engine.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "common/checkpoint/model_config.h"
#include "common/core/dtype.h"

namespace dsmath {

// The element types a cache can hold, by their --kv-dtype names.
const std::map<std::string, DType>& kv_dtypes();

class PagedKVCache {
 public:
  // dtype: F32 or BF16, the element type of every stored row.
  PagedKVCache(const ModelConfig& config, int64_t local_kv_heads, int32_t num_blocks,
               int32_t block_size = 16, DType dtype = DType::F32);

  // Bytes one block takes over all layers, keys and values.
  static int64_t bytes_per_block(const ModelConfig& config, int64_t local_kv_heads,
                                 int32_t block_size = 16, DType dtype = DType::F32);
  // How many blocks fit in `bytes` (at least 0, at most INT32_MAX).
  static int32_t blocks_for_bytes(const ModelConfig& config, int64_t local_kv_heads, int64_t bytes,
                                  int32_t block_size = 16, DType dtype = DType::F32);

  int64_t num_layers() const { return num_layers_; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  int64_t row_size() const { return row_size_; }  // local_kv_heads * head_dim elements per slot
  DType dtype() const { return dtype_; }

  // Layer `layer`'s pools, [num_blocks][block_size][row_size]: what causal_attention_paged
  // takes as k_blocks / v_blocks, with kv_row_stride = row_size(). keys()/values() are for an
  // f32 cache, keys_bf16()/values_bf16() for a bf16 one (each checks which it is).
  const float* keys(int64_t layer) const { return typed<float>(layer, 0); }
  const float* values(int64_t layer) const { return typed<float>(layer, 1); }
  const uint16_t* keys_bf16(int64_t layer) const { return typed<uint16_t>(layer, 0); }
  const uint16_t* values_bf16(int64_t layer) const { return typed<uint16_t>(layer, 1); }

  // Stores n rows of keys and values (each [n][row_size], contiguous) of one layer at the
  // sequence's positions first_pos .. first_pos + n - 1. The table must already cover them.
  void write(int64_t layer, std::span<const int32_t> table, int64_t first_pos, int64_t n,
             const float* k, const float* v);

  // Where the key (value) row of position `pos` is (f32 cache).
  const float* key_row(int64_t layer, std::span<const int32_t> table, int64_t pos) const;
  const float* value_row(int64_t layer, std::span<const int32_t> table, int64_t pos) const;

  // Copies every slot of block src into block dst, in every layer, keys and values: the
  // copy-on-write the BlockManager asks for when a shared partial block is appended to.
  void copy_block(int32_t src, int32_t dst);

 private:
  unsigned char* layer_base(int64_t layer, int kv) const;
  template <typename T>
  const T* typed(int64_t layer, int kv) const {
    check_dtype(sizeof(T) == 4 ? DType::F32 : DType::BF16);
    return reinterpret_cast<const T*>(layer_base(layer, kv));
  }
  void check_dtype(DType want) const;
  int64_t slot_offset(std::span<const int32_t> table, int64_t pos) const;
  void check_block(int32_t block) const;

  int64_t num_layers_;
  int32_t num_blocks_;
  int32_t block_size_;
  int64_t row_size_;
  DType dtype_;
  int64_t layer_elems_;  // num_blocks * block_size * row_size: one of K or V of one layer
  // [layer][keys, values][num_blocks][block_size][row_size]. Left uninitialised on purpose:
  // pages are committed only as blocks are first written, so RSS follows the KV actually used,
  // and only written slots are ever read.
  std::unique_ptr<unsigned char[]> data_;
};

}  // namespace dsmath
