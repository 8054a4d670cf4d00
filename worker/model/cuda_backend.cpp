#include "worker/model/cuda_backend.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/core/error.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/paged_attention.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/sampling.h"

namespace dsmath {
namespace {

// Thrown inside a graph capture by an op that needs a new buffer: the capture is abandoned and
// the step runs eagerly.
struct CaptureNeedsMemory {};

bool graphs_from_environment() {
  const char* v = std::getenv("DSMATH_CUDA_GRAPHS");
  return v == nullptr || std::string(v) != "0";
}

}  // namespace

CudaBackend::CudaBackend(int device, DType kv_dtype)
    : device_(device), kv_dtype_(kv_dtype), graphs_enabled_(graphs_from_environment()) {
  DSMATH_CHECK(kv_dtype == DType::F32 || kv_dtype == DType::BF16,
               "CUDA backend: the KV cache holds f32 or bf16, not ", dtype_name(kv_dtype));
  int count = 0;
  DSMATH_CUDA_CHECK(cudaGetDeviceCount(&count));
  DSMATH_CHECK(device >= 0 && device < count, "CUDA backend: device ", device,
               " does not exist (this node has ", count, " GPUs)");
  DSMATH_CUDA_CHECK(cudaSetDevice(device));
  DSMATH_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  DSMATH_CUDA_CHECK(cudaEventCreateWithFlags(&staged_copied_, cudaEventDisableTiming));
  allocator_ = std::make_unique<cuda::DeviceAllocator>(device, stream_);
  gemm_ = std::make_unique<cuda::Gemm>(stream_);
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  drop_graphs();
  bf16_scratch_ = Tensor();
  partials_ = Tensor();
  attention_scratch_ = Tensor();
  staged_.reset();
  gemm_.reset();
  allocator_.reset();
  for (void* p : owned_) cudaFree(p);
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
  if (staged_copied_ != nullptr) cudaEventDestroy(staged_copied_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void* CudaBackend::device_copy(const void* host, size_t bytes) {
  void* p = nullptr;
  DSMATH_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 1)));
  owned_.push_back(p);
  if (host != nullptr && bytes != 0) {
    // On our stream (non-blocking: the legacy stream would not order it with our kernels),
    // and waited for: the host memory may be pageable and freed after the call.
    DSMATH_CUDA_CHECK(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, stream_));
    DSMATH_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  return p;
}

void CudaBackend::sized(Tensor& t, DType dtype, int64_t rows, int64_t cols) {
  const bool reusable = t.raw() != nullptr && t.device() == Device::kCuda && t.dtype() == dtype;
  if (reusable && rows * cols <= t.capacity()) {
    t = Tensor(Device::kCuda, dtype, t.storage(), rows, cols, t.capacity());
    return;
  }
  if (capturing_) throw CaptureNeedsMemory{};
  ++buffers_generation_;
  const int64_t elements = std::max<int64_t>(rows * cols, 1);
  t = Tensor(Device::kCuda, dtype, allocator_->allocate(size_t(elements) * dtype_size(dtype)), rows,
             cols, elements);
}

void CudaBackend::resize(Tensor& t, int64_t rows, int64_t cols) {
  sized(t, DType::F32, rows, cols);
}

void CudaBackend::set_graphs(bool enabled) {
  graphs_enabled_ = enabled;
  if (!enabled) drop_graphs();
}

void CudaBackend::drop_graphs() {
  for (auto& [key, graph] : graphs_)
    if (graph.exec != nullptr) cudaGraphExecDestroy(graph.exec);
  graphs_.clear();
}

void CudaBackend::run_step(uint64_t graph_key, const std::function<void()>& body) {
  if (graph_key == 0 || !graphs_enabled_) return body();
  // The decode split is part of a decode step's launch shape (grid, scratch, kernel
  // arguments), chosen by begin_step from a power-of-two bucket of the step's longest context:
  // folded into the key, a step whose contexts grew into the next bucket captures its own
  // graph, and every step of a bucket replays one (blocks past a row's context exit early).
  // Sizing every step for the longest context the cache could hold instead would launch and
  // merge up to thousands of empty partitions per row at short contexts.
  graph_key = graph_key * 1024 + decode_split_code_;
  StepGraph& graph = graphs_[graph_key];
  if (graph.exec != nullptr && graph.generation == buffers_generation_) {
    DSMATH_CUDA_CHECK(cudaGraphLaunch(graph.exec, stream_));
    ++graph_replays_;
    return;
  }
  if (graph.exec != nullptr) {  // its buffers are gone: retire it
    DSMATH_CUDA_CHECK(cudaGraphExecDestroy(graph.exec));
    graph.exec = nullptr;
  }
  if (graph.generation != buffers_generation_) {  // first of its size since buffers changed
    body();
    graph.generation = buffers_generation_;
    return;
  }
  // Capture on this thread only: work other threads enqueue elsewhere is not ours to record.
  DSMATH_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  bool needs_memory = false;
  try {
    body();
  } catch (const CaptureNeedsMemory&) {
    needs_memory = true;
  } catch (...) {
    capturing_ = false;
    cudaGraph_t abandoned = nullptr;
    cudaStreamEndCapture(stream_, &abandoned);
    if (abandoned != nullptr) cudaGraphDestroy(abandoned);
    throw;
  }
  capturing_ = false;
  cudaGraph_t captured = nullptr;
  DSMATH_CUDA_CHECK(cudaStreamEndCapture(stream_, &captured));
  if (needs_memory) {
    cudaGraphDestroy(captured);
    body();  // sizes the buffer; the next step of this size captures again
    graph.generation = buffers_generation_;
    return;
  }
  const cudaError_t rc = cudaGraphInstantiate(&graph.exec, captured, 0);
  cudaGraphDestroy(captured);
  DSMATH_CUDA_CHECK(rc);
  DSMATH_CUDA_CHECK(cudaGraphLaunch(graph.exec, stream_));
}

const void* CudaBackend::bf16_of(const WeightView& host, std::vector<uint16_t>& rounded) {
  if (host.dtype == DType::BF16) return host.data;
  const size_t n = size_t(host.rows * host.cols);
  rounded.resize(n);
  for (size_t i = 0; i < n; ++i) rounded[i] = f32_to_bf16(load_as_f32(host.data, host.dtype, i));
  return rounded.data();
}

WeightView CudaBackend::place(const WeightView& host) {
  const size_t n = size_t(host.rows * host.cols);
  std::vector<uint16_t> rounded;
  weight_bytes_ += n * 2;
  return WeightView{device_copy(bf16_of(host, rounded), n * 2), DType::BF16, host.rows, host.cols};
}

StackedWeights CudaBackend::place_stacked(std::span<const WeightView> host_parts) {
  DSMATH_CHECK(!host_parts.empty(), "place_stacked: no weights");
  const int64_t cols = host_parts.front().cols;
  int64_t rows = 0;
  for (const WeightView& part : host_parts) {
    DSMATH_CHECK(part.cols == cols, "place_stacked: weights of ", cols, " and ", part.cols,
                 " columns cannot share a GEMM");
    rows += part.rows;
  }
  StackedWeights placed;
  placed.stacked =
      WeightView{device_copy(nullptr, size_t(rows * cols) * 2), DType::BF16, rows, cols};
  weight_bytes_ += size_t(rows * cols) * 2;
  auto* at = static_cast<uint16_t*>(const_cast<void*>(placed.stacked.data));
  for (const WeightView& part : host_parts) {
    std::vector<uint16_t> rounded;
    const size_t n = size_t(part.rows * part.cols);
    // Synchronous per part: the host memory may be pageable and `rounded` goes at scope end.
    DSMATH_CUDA_CHECK(
        cudaMemcpyAsync(at, bf16_of(part, rounded), n * 2, cudaMemcpyHostToDevice, stream_));
    DSMATH_CUDA_CHECK(cudaStreamSynchronize(stream_));
    placed.parts.push_back(WeightView{at, DType::BF16, part.rows, part.cols});
    at += n;
  }
  return placed;
}

NormWeight CudaBackend::place(const NormWeight& host, int64_t size) {
  std::vector<float> values(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i)
    values[size_t(i)] = load_as_f32(host.data, host.dtype, size_t(i));
  weight_bytes_ += values.size() * sizeof(float);
  return NormWeight{device_copy(values.data(), values.size() * sizeof(float)), DType::F32};
}

void CudaBackend::upload(const float* host, int64_t rows, int64_t cols, Tensor& t) {
  resize(t, rows, cols);
  DSMATH_CUDA_CHECK(cudaMemcpyAsync(t.data(), host, size_t(t.size()) * sizeof(float),
                                    cudaMemcpyHostToDevice, stream_));
  DSMATH_CUDA_CHECK(cudaStreamSynchronize(stream_));  // host memory may be pageable and reused
}

void CudaBackend::to_host(const Tensor& t, float* host) {
  check_f32_on(t, Device::kCuda, "to_host");
  DSMATH_CUDA_CHECK(cudaMemcpyAsync(host, t.data(), size_t(t.size()) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream_));
  DSMATH_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads,
                          int32_t num_blocks, int32_t block_size) {
  DSMATH_CHECK(kv_pool_ == nullptr, "CUDA backend: prepare called twice");
  DSMATH_CHECK(num_blocks > 0 && block_size > 0, "CUDA backend: ", num_blocks, " KV blocks of ",
               block_size, " tokens");
  DSMATH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "CUDA backend: ", heads,
               " heads do not group over ", kv_heads, " kv heads");
  heads_ = heads;
  kv_heads_ = kv_heads;
  head_dim_ = config.head_dim;
  layers_ = config.num_hidden_layers;
  num_blocks_ = num_blocks;
  block_size_ = block_size;
  const cpu::RopeTable table(config.head_dim, config.rope_theta, config.rope_scaling_factor);
  inv_freq_ = static_cast<const float*>(
      device_copy(table.inv_freq.data(), table.inv_freq.size() * sizeof(float)));
  rope_linear_factor_ = table.linear_factor;
  kv_layer_bytes_ = size_t(num_blocks) * size_t(block_size) * size_t(kv_heads * head_dim_) *
                    dtype_size(kv_dtype_);
  kv_pool_ = device_copy(nullptr, kv_layer_bytes_ * 2 * size_t(layers_));
}

void CudaBackend::begin_step(const StepInputs& step) {
  const int64_t rows = int64_t(step.token_ids.size());
  DSMATH_CHECK(int64_t(step.positions.size()) == rows, "begin_step: ", rows, " ids but ",
               step.positions.size(), " positions");
  DSMATH_CHECK(block_size_ > 0, "begin_step before prepare");
  DSMATH_CUDA_CHECK(cudaSetDevice(device_));  // the step may come from another thread
  // One-token sequences go to the decode kernel (split-K over their longest context), longer
  // ones to the prefill kernel in tiles of query vectors.
  const int64_t group = heads_ / kv_heads_;
  size_t table_words = 0, decode_count = 0, tile_count = 0;
  int64_t longest_decode = 0;
  for (const AttentionSequence& s : step.sequences) {
    DSMATH_CHECK(s.tokens >= 0, "begin_step: a sequence of ", s.tokens, " tokens");
    table_words += s.block_table.size();
    if (s.tokens == 1) {
      ++decode_count;
      longest_decode = std::max(longest_decode, s.first_position + 1);
    } else {
      tile_count += size_t(cuda::prefill_tiles(s.tokens, group));
    }
  }
  const size_t words =
      3 * size_t(rows) + step.logit_rows.size() + decode_count + 3 * tile_count + table_words;

  // The previous step's copy must have left the pinned buffer before it is rewritten.
  DSMATH_CUDA_CHECK(cudaEventSynchronize(staged_copied_));
  if (words > pinned_words_) {
    const size_t grown = std::max({words, 2 * pinned_words_, size_t(1) << 16});
    if (pinned_ != nullptr) DSMATH_CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    pinned_words_ = 0;
    DSMATH_CUDA_CHECK(
        cudaHostAlloc(reinterpret_cast<void**>(&pinned_), grown * 4, cudaHostAllocDefault));
    pinned_words_ = grown;
  }
  int32_t* ids = pinned_;
  int32_t* positions = ids + rows;
  int32_t* table_offset = positions + rows;
  int32_t* logit_rows = table_offset + rows;
  int32_t* decode_rows = logit_rows + step.logit_rows.size();
  int32_t* tiles = decode_rows + decode_count;
  int32_t* tables = tiles + 3 * tile_count;
  std::copy(step.token_ids.begin(), step.token_ids.end(), ids);
  if (step.sampled.outcomes == nullptr) check_token_ids(step.token_ids);
  std::copy(step.positions.begin(), step.positions.end(), positions);
  std::fill_n(table_offset, rows, -1);  // a row no sequence covers is an error below
  int32_t offset = 0;
  size_t decode_at = 0, tile_at = 0;
  for (const AttentionSequence& s : step.sequences) {
    DSMATH_CHECK(s.first_position >= 0, "begin_step: negative position ", s.first_position);
    DSMATH_CHECK(s.row >= 0 && s.row + s.tokens <= rows, "begin_step: sequence rows [", s.row, ", ",
                 s.row + s.tokens, ") outside the step's ", rows);
    for (int64_t i = 0; i < s.tokens; ++i) {
      DSMATH_CHECK(positions[s.row + i] == s.first_position + i, "begin_step: row ", s.row + i,
                   " is at position ", positions[s.row + i], ", its sequence says ",
                   s.first_position + i);
      const int64_t needed = (int64_t(positions[s.row + i]) / block_size_) + 1;
      DSMATH_CHECK(int64_t(s.block_table.size()) >= needed,
                   "begin_step: block table too short for position ", positions[s.row + i]);
      table_offset[s.row + i] = offset;
    }
    for (int32_t b : s.block_table) {
      DSMATH_CHECK(b >= 0 && b < num_blocks_, "begin_step: KV block ", b, " outside 0..",
                   num_blocks_ - 1);
      tables[offset++] = b;
    }
    if (s.tokens == 1) decode_rows[decode_at++] = int32_t(s.row);
    for (int64_t first = 0; s.tokens > 1 && first < s.tokens * group;
         first += cuda::kPrefillTileQueries) {
      tiles[3 * tile_at] = int32_t(s.row);
      tiles[3 * tile_at + 1] = int32_t(s.tokens);
      tiles[3 * tile_at + 2] = int32_t(first);
      ++tile_at;
    }
  }
  for (int64_t r = 0; r < rows; ++r)
    DSMATH_CHECK(table_offset[r] >= 0, "begin_step: row ", r, " belongs to no sequence");
  for (size_t i = 0; i < step.logit_rows.size(); ++i) {
    DSMATH_CHECK(step.logit_rows[i] >= 0 && step.logit_rows[i] < rows, "begin_step: logit row ",
                 step.logit_rows[i], " outside the step's ", rows);
    logit_rows[i] = int32_t(step.logit_rows[i]);
  }

  // The previous step's kernels read staged_ before this copy overwrites it (stream order),
  // so one device buffer serves every step; it only grows.
  if (staged_ == nullptr || staged_bytes_ < words * 4) {
    staged_ = allocator_->allocate(pinned_words_ * 4);
    staged_bytes_ = pinned_words_ * 4;
    ++buffers_generation_;
  }
  DSMATH_CUDA_CHECK(
      cudaMemcpyAsync(staged_.get(), pinned_, words * 4, cudaMemcpyHostToDevice, stream_));
  DSMATH_CUDA_CHECK(cudaEventRecord(staged_copied_, stream_));
  // Tokens the previous step sampled on this device, not yet seen by the host (overlap).
  if (step.sampled.outcomes != nullptr)
    cuda::fill_token_placeholders(static_cast<int32_t*>(staged_.get()), rows,
                                  static_cast<const cuda::SampleRowOutcome*>(step.sampled.outcomes),
                                  step.sampled.count, stream_);
  const int32_t* d = static_cast<const int32_t*>(staged_.get());
  ids_ = d;
  positions_ = d + rows;
  table_offset_ = d + 2 * rows;
  // Every address depends on the counts of rows, logit rows, decode rows and tiles alone
  // (tables last), as a graph needs: in a decode step, on its row count.
  logit_row_ids_ = d + 3 * rows;
  decode_rows_ = logit_row_ids_ + step.logit_rows.size();
  prefill_tiles_ = decode_rows_ + decode_count;
  tables_ = prefill_tiles_ + 3 * tile_count;
  step_rows_ = rows;
  logit_rows_ = int64_t(step.logit_rows.size());
  decode_count_ = int64_t(decode_count);
  prefill_tile_count_ = int64_t(tile_count);
  const cuda::DecodeSplit split = cuda::decode_split(decode_count_, heads_, longest_decode);
  decode_partitions_ = split.partitions;
  decode_partition_keys_ = split.partition_keys;
  // Both powers of two (partitions < 2^16, keys < 2^63): a code below 1024 naming the split.
  decode_split_code_ = split.partitions == 1
                           ? 0
                           : 1 + 64 * uint64_t(std::countr_zero(uint32_t(split.partitions))) +
                                 uint64_t(std::countr_zero(uint64_t(split.partition_keys)));
}

void CudaBackend::copy_kv_block(int32_t src, int32_t dst) {
  DSMATH_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_,
               "copy_kv_block: block ", src, " -> ", dst, " outside 0..", num_blocks_ - 1);
  if (src == dst) return;
  const size_t block_bytes = kv_layer_bytes_ / size_t(num_blocks_);
  auto* base = static_cast<unsigned char*>(kv_pool_);
  for (int64_t pool = 0; pool < 2 * layers_; ++pool) {
    unsigned char* p = base + size_t(pool) * kv_layer_bytes_;
    DSMATH_CUDA_CHECK(cudaMemcpyAsync(p + size_t(dst) * block_bytes, p + size_t(src) * block_bytes,
                                      block_bytes, cudaMemcpyDeviceToDevice, stream_));
  }
}

void CudaBackend::check_step_rows(const Tensor& x, const char* op) const {
  check_f32_on(x, Device::kCuda, op);
  DSMATH_CHECK(x.rows() == step_rows_, op, ": tensor has ", x.rows(), " rows, the step ",
               step_rows_);
}

void CudaBackend::embedding(const WeightView& table, int64_t first_row, Tensor& out) {
  DSMATH_CHECK(table.dtype == DType::BF16, "embedding: table not placed by the CUDA backend");
  resize(out, step_rows_, table.cols);
  cuda::embedding(static_cast<const uint16_t*>(table.data), table.rows, table.cols, first_row, ids_,
                  step_rows_, out.data(), stream_);
}

void CudaBackend::rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) {
  check_f32_on(x, Device::kCuda, "rms_norm");
  DSMATH_CHECK(gamma.dtype == DType::F32, "rms_norm: weight not placed by the CUDA backend");
  resize(out, x.rows(), x.cols());
  cuda::rms_norm(x.data(), x.rows(), x.cols(), static_cast<const float*>(gamma.data), eps,
                 out.data(), stream_);
}

const uint16_t* CudaBackend::as_bf16(const Tensor& x) {
  sized(bf16_scratch_, DType::BF16, x.rows(), x.cols());
  cuda::to_bf16(x.data(), x.size(), static_cast<uint16_t*>(bf16_scratch_.raw()), stream_);
  return static_cast<const uint16_t*>(bf16_scratch_.raw());
}

void CudaBackend::linear(const Tensor& x, const WeightView& w, Tensor& y) {
  check_f32_on(x, Device::kCuda, "linear");
  DSMATH_CHECK(x.cols() == w.cols, "linear: input width ", x.cols(), " != weight columns ", w.cols);
  DSMATH_CHECK(w.dtype == DType::BF16, "linear: weight not placed by the CUDA backend");
  resize(y, x.rows(), w.rows);
  gemm_->linear(as_bf16(x), x.rows(), x.cols(), static_cast<const uint16_t*>(w.data), w.rows,
                y.data());
}

void CudaBackend::linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) {
  check_f32_on(x, Device::kCuda, "linear_chunked");
  DSMATH_CHECK(x.cols() == w.cols, "linear: input width ", x.cols(), " != weight columns ", w.cols);
  DSMATH_CHECK(w.dtype == DType::BF16, "linear: weight not placed by the CUDA backend");
  resize(partials_, chunks * x.rows(), w.rows);
  gemm_->linear_chunks(as_bf16(x), x.rows(), x.cols(), static_cast<const uint16_t*>(w.data), w.rows,
                       chunks, partials_.data());
  tree_sum(partials_, chunks, y);
}

void CudaBackend::tree_sum(Tensor& x, int64_t parts, Tensor& out) {
  check_f32_on(x, Device::kCuda, "tree_sum");
  DSMATH_CHECK(parts >= 1 && x.rows() % parts == 0, "tree_sum: ", x.rows(),
               " rows do not split into ", parts, " parts");
  const int64_t rows = x.rows() / parts;
  if (out.raw() != x.raw()) resize(out, rows, x.cols());
  cuda::tree_sum(x.data(), parts, rows * x.cols(), out.data(), stream_);
  if (out.raw() == x.raw())
    out = Tensor(Device::kCuda, DType::F32, x.storage(), rows, x.cols(), x.capacity());
}

void CudaBackend::rope(Tensor& x, int64_t heads) {
  check_step_rows(x, "rope");
  DSMATH_CHECK(x.cols() == heads * head_dim_, "rope: ", x.cols(), " columns are not ", heads,
               " heads of ", head_dim_);
  cuda::rope(x.data(), x.rows(), heads, head_dim_, positions_, inv_freq_, rope_linear_factor_,
             stream_);
}

void CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_f32_on(gate, Device::kCuda, "silu_mul");
  check_f32_on(up, Device::kCuda, "silu_mul");
  DSMATH_CHECK(gate.size() == up.size(), "silu_mul: gate and up differ in size");
  if (out.raw() != gate.raw()) resize(out, gate.rows(), gate.cols());
  cuda::silu_mul(gate.data(), up.data(), gate.size(), out.data(), stream_);
}

void CudaBackend::linear_stacked(const Tensor& x, const StackedWeights& w, size_t parts,
                                 const char* op, Tensor& y) {
  DSMATH_CHECK(w.parts.size() == parts && w.stacked.data != nullptr, op, ": ", w.parts.size(),
               " weights", w.stacked.data == nullptr ? " not stacked by the CUDA backend" : "");
  linear(x, w.stacked, y);
}

void CudaBackend::qkv_rope(const Tensor& x, const StackedWeights& w, Tensor& scratch, Tensor& q,
                           Tensor& k, Tensor& v) {
  check_step_rows(x, "qkv_rope");
  const int64_t q_width = heads_ * head_dim_, kv_width = kv_heads_ * head_dim_;
  DSMATH_CHECK(w.parts.size() == 3 && w.parts[0].rows == q_width && w.parts[1].rows == kv_width &&
                   w.parts[2].rows == kv_width,
               "qkv_rope: weights do not match the prepared ", heads_, " heads and ", kv_heads_,
               " kv heads of ", head_dim_);
  linear_stacked(x, w, 3, "qkv_rope", scratch);
  resize(q, x.rows(), q_width);
  resize(k, x.rows(), kv_width);
  resize(v, x.rows(), kv_width);
  cuda::split_qkv_rope(scratch.data(), x.rows(), heads_, kv_heads_, head_dim_, positions_,
                       inv_freq_, rope_linear_factor_, q.data(), k.data(), v.data(), stream_);
}

void CudaBackend::gate_up_silu(const Tensor& x, const StackedWeights& w, Tensor& scratch,
                               Tensor& out) {
  check_f32_on(x, Device::kCuda, "gate_up_silu");
  DSMATH_CHECK(w.parts.size() == 2 && w.parts[0].rows == w.parts[1].rows,
               "gate_up_silu: gate and up weights differ in rows");
  linear_stacked(x, w, 2, "gate_up_silu", scratch);
  const int64_t width = w.parts[0].rows;
  resize(out, x.rows(), width);
  cuda::silu_mul_halves(scratch.data(), x.rows(), width, out.data(), stream_);
}

void CudaBackend::add(Tensor& x, const Tensor& y) {
  check_f32_on(x, Device::kCuda, "add");
  check_f32_on(y, Device::kCuda, "add");
  DSMATH_CHECK(x.size() == y.size(), "add: tensors differ in size");
  cuda::add(x.data(), y.data(), x.size(), stream_);
}

void CudaBackend::attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                            Tensor& out) {
  for (const Tensor* t : {&q, &k, &v}) check_step_rows(*t, "attention");
  const int64_t kv_width = kv_heads_ * head_dim_;
  DSMATH_CHECK(q.cols() == heads_ * head_dim_ && k.cols() == kv_width && v.cols() == kv_width,
               "attention: q, k, v widths do not match the prepared heads");
  DSMATH_CHECK(layer >= 0 && layer < layers_, "attention: layer ", layer, " of ", layers_);
  auto* base = static_cast<unsigned char*>(kv_pool_) + size_t(2 * layer) * kv_layer_bytes_;
  const cuda::PagedKV cache{base, base + kv_layer_bytes_, kv_dtype_ == DType::BF16, block_size_};
  const cuda::StepRows rows{step_rows_, positions_, table_offset_, tables_};
  resize(out, q.rows(), q.cols());
  cuda::write_kv(cache, rows, k.data(), v.data(), kv_width, stream_);
  if (decode_count_ > 0) {
    const cuda::DecodeSplit split{decode_partitions_, decode_partition_keys_};
    float* scratch = nullptr;
    if (split.partitions > 1) {
      sized(attention_scratch_, DType::F32, 1,
            cuda::decode_scratch_floats(decode_count_, heads_, head_dim_, split));
      scratch = attention_scratch_.data();
    }
    cuda::decode_attention(cache, rows, decode_rows_, decode_count_, split, q.data(), heads_,
                           kv_heads_, head_dim_, scratch, out.data(), stream_);
  }
  cuda::prefill_attention(cache, rows, prefill_tiles_, prefill_tile_count_, q.data(), heads_,
                          kv_heads_, head_dim_, out.data(), stream_);
}

void CudaBackend::gather_logit_rows(const Tensor& x, Tensor& out) {
  check_step_rows(x, "gather_logit_rows");
  resize(out, logit_rows_, x.cols());
  cuda::gather_rows(x.data(), logit_row_ids_, logit_rows_, x.cols(), out.data(), stream_);
}

}  // namespace dsmath
