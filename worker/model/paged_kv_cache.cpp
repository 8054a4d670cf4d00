#include "worker/model/paged_kv_cache.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include "common/core/error.h"

namespace dsmath {

namespace {

int64_t checked_row_size(const ModelConfig& config, int64_t local_kv_heads) {
  DSMATH_CHECK(local_kv_heads > 0 && config.head_dim > 0 && config.num_hidden_layers > 0,
               "paged KV cache: bad shape: ", local_kv_heads, " kv heads of dim ", config.head_dim,
               ", ", config.num_hidden_layers, " layers");
  return local_kv_heads * config.head_dim;
}

size_t element_size(DType dtype) {
  DSMATH_CHECK(dtype == DType::F32 || dtype == DType::BF16, "paged KV cache: dtype ",
               dtype_name(dtype), " is not f32 or bf16");
  return dtype_size(dtype);
}

}  // namespace

const std::map<std::string, DType>& kv_dtypes() {
  static const std::map<std::string, DType> names{{"f32", DType::F32}, {"bf16", DType::BF16}};
  return names;
}

int64_t PagedKVCache::bytes_per_block(const ModelConfig& config, int64_t local_kv_heads,
                                      int32_t block_size, DType dtype) {
  DSMATH_CHECK(block_size > 0, "paged KV cache: block_size ", block_size, " must be positive");
  return 2 * config.num_hidden_layers * int64_t(block_size) *
         checked_row_size(config, local_kv_heads) * int64_t(element_size(dtype));
}

int32_t PagedKVCache::blocks_for_bytes(const ModelConfig& config, int64_t local_kv_heads,
                                       int64_t bytes, int32_t block_size, DType dtype) {
  const int64_t n =
      std::max<int64_t>(bytes, 0) / bytes_per_block(config, local_kv_heads, block_size, dtype);
  return int32_t(std::min<int64_t>(n, std::numeric_limits<int32_t>::max()));
}

PagedKVCache::PagedKVCache(const ModelConfig& config, int64_t local_kv_heads, int32_t num_blocks,
                           int32_t block_size, DType dtype)
    : num_layers_(config.num_hidden_layers),
      num_blocks_(num_blocks),
      block_size_(block_size),
      row_size_(checked_row_size(config, local_kv_heads)),
      dtype_(dtype) {
  DSMATH_CHECK(num_blocks > 0, "paged KV cache: num_blocks ", num_blocks, " must be positive");
  const int64_t block_bytes = bytes_per_block(config, local_kv_heads, block_size, dtype);
  DSMATH_CHECK(double(block_bytes) * num_blocks < 0x1p62, "paged KV cache: ", num_blocks,
               " blocks of ", block_bytes, " bytes is beyond any memory");
  layer_elems_ = int64_t(num_blocks) * block_size * row_size_;
  const int64_t total = 2 * num_layers_ * layer_elems_ * int64_t(element_size(dtype));
  try {
    data_.reset(new unsigned char[size_t(total)]);  // default-initialised: see the header
  } catch (const std::bad_alloc&) {
    fail("paged KV cache: cannot allocate ", num_blocks, " blocks of ", block_bytes, " bytes (",
         double(block_bytes) * num_blocks / (1 << 30), " GiB); lower the KV cache budget");
  }
}

unsigned char* PagedKVCache::layer_base(int64_t layer, int kv) const {
  DSMATH_CHECK(layer >= 0 && layer < num_layers_, "paged KV cache: layer ", layer,
               " out of range [0, ", num_layers_, ")");
  return data_.get() + (2 * layer + kv) * layer_elems_ * int64_t(dtype_size(dtype_));
}

void PagedKVCache::check_dtype(DType want) const {
  DSMATH_CHECK(dtype_ == want, "paged KV cache: the cache holds ", dtype_name(dtype_),
               " rows, read as ", dtype_name(want));
}

void PagedKVCache::check_block(int32_t block) const {
  DSMATH_CHECK(block >= 0 && block < num_blocks_, "paged KV cache: block id ", block,
               " out of range [0, ", num_blocks_, ")");
}

int64_t PagedKVCache::slot_offset(std::span<const int32_t> table, int64_t pos) const {
  DSMATH_CHECK(pos >= 0 && pos / block_size_ < int64_t(table.size()), "paged KV cache: position ",
               pos, " is outside a block table of ", table.size(), " blocks of ", block_size_);
  const int32_t block = table[size_t(pos / block_size_)];
  check_block(block);
  return (int64_t(block) * block_size_ + pos % block_size_) * row_size_;
}

void PagedKVCache::write(int64_t layer, std::span<const int32_t> table, int64_t first_pos,
                         int64_t n, const float* k, const float* v) {
  DSMATH_CHECK(n >= 0, "paged KV cache: cannot write ", n, " rows");
  if (n == 0) return;
  unsigned char* kb = layer_base(layer, 0);
  unsigned char* vb = layer_base(layer, 1);
  const size_t esize = dtype_size(dtype_);
  slot_offset(table, first_pos + n - 1);  // checks the whole range fits before writing any row
  // One copy per run of positions inside a block: slots of a block are contiguous.
  for (int64_t pos = first_pos; pos < first_pos + n;) {
    const int64_t run = std::min(first_pos + n - pos, block_size_ - pos % block_size_);
    const int64_t dst = slot_offset(table, pos), src = (pos - first_pos) * row_size_;
    if (dtype_ == DType::F32) {
      const size_t bytes = size_t(run * row_size_) * sizeof(float);
      std::memcpy(kb + size_t(dst) * esize, k + src, bytes);
      std::memcpy(vb + size_t(dst) * esize, v + src, bytes);
    } else {
      auto* kd = reinterpret_cast<uint16_t*>(kb) + dst;
      auto* vd = reinterpret_cast<uint16_t*>(vb) + dst;
      for (int64_t i = 0; i < run * row_size_; ++i) {
        kd[i] = f32_to_bf16(k[src + i]);
        vd[i] = f32_to_bf16(v[src + i]);
      }
    }
    pos += run;
  }
}

const float* PagedKVCache::key_row(int64_t layer, std::span<const int32_t> table,
                                   int64_t pos) const {
  return keys(layer) + slot_offset(table, pos);
}

const float* PagedKVCache::value_row(int64_t layer, std::span<const int32_t> table,
                                     int64_t pos) const {
  return values(layer) + slot_offset(table, pos);
}

void PagedKVCache::copy_block(int32_t src, int32_t dst) {
  check_block(src);
  check_block(dst);
  if (src == dst) return;
  const int64_t block_bytes = int64_t(block_size_) * row_size_ * int64_t(dtype_size(dtype_));
  for (int64_t layer = 0; layer < num_layers_; ++layer)
    for (int kv = 0; kv < 2; ++kv) {
      unsigned char* base = layer_base(layer, kv);
      std::memcpy(base + int64_t(dst) * block_bytes, base + int64_t(src) * block_bytes,
                  size_t(block_bytes));
    }
}

}  // namespace dsmath
