#include "worker/model/kv_cache.h"

#include "common/core/error.h"

namespace dsmath {

KVCache::KVCache(const ModelConfig& config, int64_t capacity)
    : capacity_(capacity), row_size_(config.num_key_value_heads * config.head_dim) {
  const size_t n = size_t(config.num_hidden_layers * capacity_ * row_size_);
  keys_.resize(n);
  values_.resize(n);
}

int64_t KVCache::append(int64_t n) {
  DSMATH_CHECK(length_ + n <= capacity_, "KV cache full: ", length_, " + ", n,
               " positions exceed its capacity of ", capacity_);
  const int64_t first = length_;
  length_ += n;
  return first;
}

}  // namespace dsmath
