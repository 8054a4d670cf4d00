// The CUDA backend: one GPU per rank, one stream, the kernels of kernels/cuda and cuBLAS.
//
// Weights are copied to device memory once at load, as bf16 (f32 and f16 checkpoints are
// rounded to bf16 on the host first): every GEMM runs on tensor cores, bf16 x bf16 with f32
// accumulation. Activations stay f32 and are rounded to bf16 only as a GEMM's input. The KV
// cache is f32 or bf16 (--kv-dtype). Each step's ids, positions, block tables and logit rows
// cross to the device in one copy from a pinned buffer (begin_step); nothing else crosses until
// to_host. Buffers come from CUDA's stream-ordered pool.
//
// Attention: one-token sequences (decode rows) run the decode kernel, split-K when the step's
// longest decode context exceeds cuda::kSplitAbove (512) keys: partitions of 256 x 2^j keys,
// one block each, merged by a second kernel from a scratch this backend sizes; longer
// sequences (prompts, chunks after a cached prefix) run the tiled flash-style prefill kernel.
// begin_step stages which rows and query tiles go where next to the block tables.
//
// Decode steps run as CUDA graphs, one per batch size and decode split (a power-of-two bucket
// of the longest context, so a graph replayed at a longer context of its bucket stays right
// and a longer bucket gets its own graph): the first step of a key runs eagerly
// (sizing every buffer), the second is captured and launched, later ones replay the graph. A
// graph holds buffer addresses, so any new buffer (a bigger step came along) retires every
// graph, which the next steps capture again; a capture that would need memory is abandoned and
// the step runs eagerly. DSMATH_CUDA_GRAPHS=0 turns graphs off. Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/gemm.h"
#include "worker/model/backend.h"

namespace dsmath {

class CudaBackend final : public Backend {
 public:
  // Makes `device` current on this thread; kv_dtype is F32 or BF16.
  CudaBackend(int device, DType kv_dtype);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  int gpu() const { return device_; }
  cudaStream_t stream() const { return stream_; }  // give it to NcclCommunicator::set_stream
  size_t weight_bytes() const { return weight_bytes_; }

  Device device() const override { return Device::kCuda; }
  bool fixed_order_sums() const override { return false; }
  void resize(Tensor& t, int64_t rows, int64_t cols) override;
  WeightView place(const WeightView& host) override;
  NormWeight place(const NormWeight& host, int64_t size) override;
  // The parts' rows in one device matrix (one GEMM for q/k/v and for gate/up).
  StackedWeights place_stacked(std::span<const WeightView> host_parts) override;
  void upload(const float* host, int64_t rows, int64_t cols, Tensor& t) override;
  void to_host(const Tensor& t, float* host) override;

  void prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads, int32_t num_blocks,
               int32_t block_size) override;
  void begin_step(const StepInputs& step) override;
  void run_step(uint64_t graph_key, const std::function<void()>& body) override;
  void set_graphs(bool enabled);  // default: on unless DSMATH_CUDA_GRAPHS=0
  int64_t graph_replays() const { return graph_replays_; }
  void copy_kv_block(int32_t src, int32_t dst) override;

  void embedding(const WeightView& table, int64_t first_row, Tensor& out) override;
  void rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) override;
  void linear(const Tensor& x, const WeightView& w, Tensor& y) override;
  void linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) override;
  void tree_sum(Tensor& x, int64_t parts, Tensor& out) override;
  void rope(Tensor& x, int64_t heads) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  // One GEMM into scratch, then one kernel that splits it (rotating q and k; silu x up).
  void qkv_rope(const Tensor& x, const StackedWeights& w, Tensor& scratch, Tensor& q, Tensor& k,
                Tensor& v) override;
  void gate_up_silu(const Tensor& x, const StackedWeights& w, Tensor& scratch,
                    Tensor& out) override;
  void add(Tensor& x, const Tensor& y) override;
  void attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                 Tensor& out) override;
  void gather_logit_rows(const Tensor& x, Tensor& out) override;

 private:
  // t resized to rows x cols of dtype; new storage retires every graph (see above).
  void sized(Tensor& t, DType dtype, int64_t rows, int64_t cols);
  void drop_graphs();
  // x rounded to bf16 in scratch: the GEMMs' input.
  const uint16_t* as_bf16(const Tensor& x);
  void* device_copy(const void* host, size_t bytes);  // owned until the backend goes
  // host as bf16 (rounded when stored otherwise): what every GEMM reads.
  static const void* bf16_of(const WeightView& host, std::vector<uint16_t>& rounded);
  // y = x w.stacked^T, checked: the stacked GEMM of qkv_rope and gate_up_silu.
  void linear_stacked(const Tensor& x, const StackedWeights& w, size_t parts, const char* op,
                      Tensor& y);
  void check_step_rows(const Tensor& x, const char* op) const;

  int device_;
  DType kv_dtype_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::DeviceAllocator> allocator_;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::vector<void*> owned_;  // weights, norms, the RoPE table, the KV cache (cudaMalloc'd)
  size_t weight_bytes_ = 0;

  // prepare()
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0, layers_ = 0;
  int32_t num_blocks_ = 0, block_size_ = 0;
  const float* inv_freq_ = nullptr;
  float rope_linear_factor_ = 1.0f;
  void* kv_pool_ = nullptr;    // [layer][keys, values][num_blocks][block_size][kv_width]
  size_t kv_layer_bytes_ = 0;  // one of keys or values of one layer

  // begin_step(): [ids | positions | table_offset | logit_rows | decode_rows | prefill tiles
  // (3 words each) | tables], int32 each
  int32_t* pinned_ = nullptr;
  size_t pinned_words_ = 0;
  std::shared_ptr<void> staged_;
  size_t staged_bytes_ = 0;
  cudaEvent_t staged_copied_ = nullptr;  // the pinned buffer may be rewritten once it fires
  int64_t step_rows_ = 0, logit_rows_ = 0;
  const int32_t *ids_ = nullptr, *positions_ = nullptr, *table_offset_ = nullptr,
                *tables_ = nullptr, *logit_row_ids_ = nullptr;
  // Attention: the rows of one-token sequences (decode kernel) and the query tiles of longer
  // ones (prefill kernel); the decode split (cuda::DecodeSplit) from the longest decode
  // context, and its code in graph keys (0: not split).
  const int32_t *decode_rows_ = nullptr, *prefill_tiles_ = nullptr;
  int64_t decode_count_ = 0, prefill_tile_count_ = 0;
  int32_t decode_partitions_ = 1;
  int64_t decode_partition_keys_ = 0;
  uint64_t decode_split_code_ = 0;

  Tensor bf16_scratch_, partials_;
  Tensor attention_scratch_;  // the split decode's partials

  struct StepGraph {
    cudaGraphExec_t exec = nullptr;
    uint64_t generation = 0;  // buffers_generation_ when it ran eagerly or was captured
  };
  bool graphs_enabled_ = true;
  bool capturing_ = false;
  uint64_t buffers_generation_ = 1;  // bumped by every new buffer a graph could point to
  std::map<uint64_t, StepGraph> graphs_;
  int64_t graph_replays_ = 0;
};

}  // namespace dsmath
