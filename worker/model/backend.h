// The device a model runs on. LlamaModel's forward is written once against this interface;
// the CPU backend (kernels/cpu) is what CI, laptops and CPU clusters run, the CUDA backend
// (kernels/cuda) implements the same operations on a GPU.
//
// Nothing here is CPU-specific: activations are Tensors that carry their dtype and device
// (each op checks them); weights are WeightViews the backend placed (the CPU keeps views into
// the memory-mapped checkpoint, the GPU copies them to device memory once); the RoPE table and
// the KV cache belong to the backend. What a step needs besides activations (token ids,
// positions, block tables, which rows give logits) is handed over once in begin_step, so a GPU
// stages it on the device in one copy and the forward makes no host round trip until
// to_host.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "common/core/dtype.h"
#include "kernels/weight_view.h"

namespace dsmath {

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device device);

// [rows, cols] of one dtype on one device. Storage is owned by the backend's allocation.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Device device, DType dtype, std::shared_ptr<void> storage, int64_t rows, int64_t cols,
         int64_t capacity)
      : device_(device),
        dtype_(dtype),
        storage_(std::move(storage)),
        rows_(rows),
        cols_(cols),
        capacity_(capacity) {}

  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  // The f32 elements (activations are f32); throws for another dtype.
  float* data() const;
  void* raw() const { return storage_.get(); }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  int64_t capacity() const { return capacity_; }  // elements the storage holds
  const std::shared_ptr<void>& storage() const { return storage_; }

 private:
  Device device_ = Device::kCpu;
  DType dtype_ = DType::F32;
  std::shared_ptr<void> storage_;
  int64_t rows_ = 0, cols_ = 0, capacity_ = 0;
};

// Matrices of equal width that the forward multiplies by the same input (q/k/v; gate/up), each
// as placed. A backend that gains from one GEMM for all of them (CUDA) stacks their rows once at
// load: `stacked` is [sum of the parts' rows, cols] and each part a view of its rows; a backend
// that multiplies them one by one (CPU) leaves `stacked` empty.
struct StackedWeights {
  std::vector<WeightView> parts;
  WeightView stacked;
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

// The previous step's sampled tokens where a GPU sampler left them (its outcomes, opaque here):
// the source of a step's token placeholders (negative ids, worker/model/step_plan.h).
struct SampledTokens {
  const void* outcomes = nullptr;
  int64_t count = 0;
};

// Throws unless every id is a token (>= 0): a placeholder must have been filled.
void check_token_ids(std::span<const int32_t> token_ids);

// Everything a step needs besides activations; the spans must stay valid until the next
// begin_step.
struct StepInputs {
  std::span<const int32_t> token_ids;  // one per row of the step
  std::span<const int32_t> positions;  // one per row
  std::span<const AttentionSequence> sequences;
  std::span<const int64_t> logit_rows;  // rows gather_logit_rows picks, in order
  // Where negative token ids are filled from on the device (GPU backends only). Without it the
  // ids must all be tokens.
  SampledTokens sampled = {};
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // True when linear_chunked and tree_sum give the same bits whatever the row count and tp
  // (the CPU's fixed-order sum); the model then uses them for the row-parallel layers.
  virtual bool fixed_order_sums() const = 0;

  // Makes `t` rows x cols of f32, reusing its storage when big enough. Ops below size their
  // outputs themselves, so the model only sizes what it hands to the communicator.
  virtual void resize(Tensor& t, int64_t rows, int64_t cols) = 0;
  // Makes host weights usable by this backend as a matrix the model multiplies by (CPU: the
  // rows as mapped, plus the copy its kernel reads fastest, cpu::pack_for_linear).
  virtual WeightView place(const WeightView& host) = 0;
  // A row-parallel layer's slice, which linear_chunked sums in `chunks` column ranges (0: a
  // plain linear). Default: place().
  virtual WeightView place_row_parallel(const WeightView& host, int64_t chunks);
  // An embedding table only looked up by row, never multiplied (CPU: as mapped). Default:
  // place().
  virtual WeightView place_table(const WeightView& host) { return place(host); }
  virtual NormWeight place(const NormWeight& host, int64_t size) = 0;
  // Default: each part placed on its own, nothing stacked.
  virtual StackedWeights place_stacked(std::span<const WeightView> host_parts);
  virtual void upload(const float* host, int64_t rows, int64_t cols, Tensor& t) = 0;
  // Copies t to host memory once everything queued before has finished.
  virtual void to_host(const Tensor& t, float* host) = 0;

  // Allocates the paged KV cache (layers x blocks x block_size rows of kv_heads * head_dim
  // keys and values) and builds the RoPE table for this rank's `heads` query and `kv_heads`
  // key/value heads. Called once, before any step.
  virtual void prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads,
                       int32_t num_blocks, int32_t block_size) = 0;
  virtual void begin_step(const StepInputs& step) = 0;
  // Runs the step's ops (`body`, which calls the ops below on the staged inputs). A non-zero
  // `graph_key` says that every step with that key launches the same ops with the same shapes
  // (only staged values differ), so a GPU backend may capture them once and replay them; a CPU
  // backend just calls body.
  virtual void run_step(uint64_t graph_key, const std::function<void()>& body) { body(); }
  virtual void copy_kv_block(int32_t src, int32_t dst) = 0;  // all layers

  // out[i] = table[ids[i] - first_row] for the step's ids inside this rank's rows, 0 elsewhere.
  virtual void embedding(const WeightView& table, int64_t first_row, Tensor& out) = 0;
  virtual void rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) = 0;
  virtual void linear(const Tensor& x, const WeightView& w, Tensor& y) = 0;  // y = x W^T
  // y = x W^T with the sum over K as `chunks` range sums added by a fixed pairwise tree
  // (cpu::linear_chunked): the row-parallel layers' order-fixed sum.
  virtual void linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) = 0;
  // `parts` equal blocks stacked in x summed by a pairwise tree in block order:
  // ((b0 + b1) + (b2 + b3)) + ...; out has x.rows / parts rows. x is used as scratch.
  virtual void tree_sum(Tensor& x, int64_t parts, Tensor& out) = 0;
  // Rotates each of the step's rows at its position; x is [rows, heads * head_dim].
  virtual void rope(Tensor& x, int64_t heads) = 0;
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // The column-parallel projections with what follows them, one GEMM each where w is stacked:
  //   q = rope(x Wq^T), k = rope(x Wk^T), v = x Wv^T      w.parts = {Wq, Wk, Wv}
  //   out = silu(x Wg^T) * (x Wu^T)                         w.parts = {Wg, Wu}
  // at the step's positions, over the prepared heads. `scratch` is the backend's to resize.
  virtual void qkv_rope(const Tensor& x, const StackedWeights& w, Tensor& scratch, Tensor& q,
                        Tensor& k, Tensor& v) = 0;
  virtual void gate_up_silu(const Tensor& x, const StackedWeights& w, Tensor& scratch,
                            Tensor& out) = 0;
  virtual void add(Tensor& x, const Tensor& y) = 0;
  // Stores each sequence's new k, v rows in its blocks, then causal attention over its cache.
  virtual void attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                         Tensor& out) = 0;
  // out[i] = x[logit_rows[i]]
  virtual void gather_logit_rows(const Tensor& x, Tensor& out) = 0;
};

// Throws naming `op` unless t is f32 on `device`.
void check_f32_on(const Tensor& t, Device device, const char* op);

}  // namespace dsmath
