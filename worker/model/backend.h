// The device a model runs on. LlamaModel's forward is written once against this interface;
// the CPU backend (kernels/cpu) is what CI, laptops and CPU clusters run, the CUDA backend
// implements the same operations on a GPU.
//
// Activations are f32 Tensors that know their device; weights are WeightViews the backend
// placed (on the CPU: views into the memory-mapped checkpoint or a rank's own slice copy).
// Token ids, positions and block tables arrive as host spans: they are a few KB per step.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "common/checkpoint/model_config.h"
#include "kernels/cpu/rope.h"
#include "kernels/weight_view.h"

namespace dsmath {

enum class Device : uint8_t { kCpu, kCuda };

// f32 [rows, cols] on one device. Storage is owned by the backend's allocation.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Device device, std::shared_ptr<float> storage, int64_t rows, int64_t cols,
         int64_t capacity)
      : device_(device),
        storage_(std::move(storage)),
        rows_(rows),
        cols_(cols),
        capacity_(capacity) {}

  Device device() const { return device_; }
  float* data() const { return storage_.get(); }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  int64_t capacity() const { return capacity_; }  // elements the storage holds
  const std::shared_ptr<float>& storage() const { return storage_; }

 private:
  Device device_ = Device::kCpu;
  std::shared_ptr<float> storage_;
  int64_t rows_ = 0, cols_ = 0, capacity_ = 0;
};

struct NormWeight {
  const void* data = nullptr;
  DType dtype = DType::BF16;
};

// One sequence's part of a step: rows [row, row + tokens) of the step's activations hold its
// new tokens, at positions [first_position, first_position + tokens); its KV rows live in the
// blocks of `block_table`.
struct AttentionSequence {
  int64_t row;
  int64_t tokens;
  int64_t first_position;
  std::span<const int32_t> block_table;
};

struct AttentionBatch {
  std::span<const AttentionSequence> sequences;
  int64_t heads;     // query heads on this rank
  int64_t kv_heads;  // KV heads on this rank
  int64_t head_dim;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // Makes `t` rows x cols, reusing its storage when big enough. Ops below size their outputs
  // themselves, so the model only sizes the step's input.
  virtual void resize(Tensor& t, int64_t rows, int64_t cols) = 0;
  // Makes host weights usable by this backend (CPU: returned as they are).
  virtual WeightView place(const WeightView& host) = 0;
  virtual NormWeight place(const NormWeight& host, int64_t size) = 0;
  virtual void to_host(const Tensor& t, float* host) = 0;
  // out[i] = x[rows[i]]
  virtual void gather_rows(const Tensor& x, std::span<const int64_t> rows, Tensor& out) = 0;

  // out[i] = table[ids[i] - first_row] for ids inside this rank's rows, 0 elsewhere.
  virtual void embedding(const WeightView& table, int64_t first_row, std::span<const int32_t> ids,
                         Tensor& out) = 0;
  virtual void rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) = 0;
  virtual void linear(const Tensor& x, const WeightView& w, Tensor& y) = 0;  // y = x W^T
  // y = x W^T with the sum over K as `chunks` range sums added by a fixed pairwise tree
  // (cpu::linear_chunked): the row-parallel layers' order-fixed sum.
  virtual void linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) = 0;
  // `parts` equal blocks stacked in x summed by a pairwise tree in block order:
  // ((b0 + b1) + (b2 + b3)) + ...; out has x.rows / parts rows. x is used as scratch.
  virtual void tree_sum(Tensor& x, int64_t parts, Tensor& out) = 0;
  virtual void rope(Tensor& x, int64_t heads, std::span<const int32_t> positions,
                    const cpu::RopeTable& table) = 0;
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  virtual void add(Tensor& x, const Tensor& y) = 0;

  // Paged KV cache: layers x blocks x block_size rows of kv_heads * head_dim keys (values).
  virtual void allocate_kv_cache(const ModelConfig& config, int64_t local_kv_heads,
                                 int32_t num_blocks, int32_t block_size) = 0;
  virtual void copy_kv_block(int32_t src, int32_t dst) = 0;  // all layers
  // Stores each sequence's new k, v rows in its blocks, then causal attention over its cache.
  virtual void attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                         const AttentionBatch& batch, Tensor& out) = 0;
};

}  // namespace dsmath
