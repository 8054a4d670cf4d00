// Keys and values of one sequence, per layer, in f32: row t of layer l holds the
// n_kv_heads x head_dim keys (values) of position t. Capacity is fixed at creation; the
// paged, block-shared cache of the engine replaces this for batched serving.
#pragma once

#include <cstdint>
#include <vector>

#include "common/checkpoint/model_config.h"

namespace dsmath {

class KVCache {
 public:
  KVCache(const ModelConfig& config, int64_t capacity);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t row_size() const { return row_size_; }  // n_kv_heads * head_dim

  float* keys(int64_t layer) { return keys_.data() + layer * capacity_ * row_size_; }
  float* values(int64_t layer) { return values_.data() + layer * capacity_ * row_size_; }

  // Reserves `n` more positions (throws Error when over capacity) and returns the first.
  int64_t append(int64_t n);

 private:
  int64_t capacity_;
  int64_t row_size_;
  int64_t length_ = 0;
  std::vector<float> keys_, values_;
};

}  // namespace dsmath
