#include "worker/model/cpu_backend.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>

#include "common/core/error.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"

namespace dsmath {

void CpuBackend::resize(Tensor& t, int64_t rows, int64_t cols) {
  const bool reusable = t.raw() != nullptr && t.device() == Device::kCpu && t.dtype() == DType::F32;
  const int64_t capacity = reusable ? t.capacity() : 0;
  if (rows * cols <= capacity) {
    t = Tensor(Device::kCpu, DType::F32, t.storage(), rows, cols, capacity);
    return;
  }
  // Cache-line aligned: the kernels' 64-byte loads of a row then do not straddle two lines
  // (rows of the model's widths are multiples of 16 floats).
  constexpr std::align_val_t kLine{64};
  std::shared_ptr<void> storage(new (kLine) float[size_t(rows * cols)],
                                [](void* p) { ::operator delete[](p, kLine); });
  t = Tensor(Device::kCpu, DType::F32, std::move(storage), rows, cols, rows * cols);
}

WeightView CpuBackend::place_packed(const WeightView& host, int64_t chunks) {
  WeightView placed = host;
  if (auto panels = cpu::pack_for_linear(host, chunks)) {
    placed.packed = panels.get();
    packed_weights_.push_back(std::move(panels));
  }
  return placed;
}

void CpuBackend::upload(const float* host, int64_t rows, int64_t cols, Tensor& t) {
  resize(t, rows, cols);
  std::memcpy(t.data(), host, size_t(t.size()) * sizeof(float));
}

void CpuBackend::to_host(const Tensor& t, float* host) {
  check_f32_on(t, Device::kCpu, "to_host");
  std::memcpy(host, t.data(), size_t(t.size()) * sizeof(float));
}

void CpuBackend::prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads,
                         int32_t num_blocks, int32_t block_size) {
  heads_ = heads;
  kv_heads_ = kv_heads;
  head_dim_ = config.head_dim;
  rope_.emplace(config.head_dim, config.rope_theta, config.rope_scaling_factor);
  kv_ = std::make_unique<PagedKVCache>(config, kv_heads, num_blocks, block_size, kv_dtype_);
}

void CpuBackend::gather_logit_rows(const Tensor& x, Tensor& out) {
  check_f32_on(x, Device::kCpu, "gather_logit_rows");
  const std::span<const int64_t> rows = step_.logit_rows;
  resize(out, int64_t(rows.size()), x.cols());
  for (size_t i = 0; i < rows.size(); ++i) {
    DSMATH_CHECK(rows[i] >= 0 && rows[i] < x.rows(), "gather_logit_rows: row ", rows[i],
                 " is outside a step of ", x.rows(), " rows");
    std::memcpy(out.data() + int64_t(i) * x.cols(), x.data() + rows[i] * x.cols(),
                size_t(x.cols()) * sizeof(float));
  }
}

void CpuBackend::embedding(const WeightView& table, int64_t first_row, Tensor& out) {
  const std::span<const int32_t> ids = step_.token_ids;
  resize(out, int64_t(ids.size()), table.cols);
  for (size_t i = 0; i < ids.size(); ++i) {
    float* row = out.data() + int64_t(i) * table.cols;
    const int64_t local = ids[i] - first_row;
    if (local >= 0 && local < table.rows) {
      const int32_t id = int32_t(local);
      cpu::embedding_lookup(table, &id, 1, row);
    } else {
      std::fill_n(row, table.cols, 0.0f);
    }
  }
}

void CpuBackend::rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) {
  check_f32_on(x, Device::kCpu, "rms_norm");
  resize(out, x.rows(), x.cols());
  cpu::rms_norm(x.data(), x.rows(), x.cols(), gamma.data, gamma.dtype, eps, out.data());
}

void CpuBackend::linear(const Tensor& x, const WeightView& w, Tensor& y) {
  check_f32_on(x, Device::kCpu, "linear");
  DSMATH_CHECK(x.cols() == w.cols, "linear: input width ", x.cols(), " != weight columns ", w.cols);
  resize(y, x.rows(), w.rows);
  cpu::linear(x.data(), x.rows(), w, y.data());
}

void CpuBackend::linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) {
  check_f32_on(x, Device::kCpu, "linear_chunked");
  DSMATH_CHECK(x.cols() == w.cols, "linear: input width ", x.cols(), " != weight columns ", w.cols);
  resize(y, x.rows(), w.rows);
  cpu::linear_chunked(x.data(), x.rows(), w, chunks, y.data());
}

void CpuBackend::tree_sum(Tensor& x, int64_t parts, Tensor& out) {
  check_f32_on(x, Device::kCpu, "tree_sum");
  DSMATH_CHECK(parts >= 1 && x.rows() % parts == 0, "tree_sum: ", x.rows(),
               " rows do not split into ", parts, " parts");
  const int64_t rows = x.rows() / parts;
  const size_t block = size_t(rows * x.cols());
  for (int64_t stride = 1; stride < parts; stride *= 2)
    for (int64_t i = 0; i + stride < parts; i += 2 * stride) {
      float* a = x.data() + size_t(i) * block;
      const float* b = x.data() + size_t(i + stride) * block;
#pragma omp parallel for schedule(static) if (block > 65536)
      for (int64_t j = 0; j < int64_t(block); ++j) a[j] += b[j];
    }
  resize(out, rows, x.cols());
  std::copy_n(x.data(), block, out.data());
}

void CpuBackend::rope(Tensor& x, int64_t heads) {
  check_f32_on(x, Device::kCpu, "rope");
  DSMATH_CHECK(x.rows() == int64_t(step_.positions.size()) && x.cols() == heads * head_dim_,
               "rope: tensor is ", x.rows(), " x ", x.cols(), ", the step has ",
               step_.positions.size(), " rows of ", heads, " heads of ", head_dim_);
  cpu::apply_rope(x.data(), x.rows(), heads, step_.positions.data(), *rope_);
}

void CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_f32_on(gate, Device::kCpu, "silu_mul");
  check_f32_on(up, Device::kCpu, "silu_mul");
  DSMATH_CHECK(gate.size() == up.size(), "silu_mul: gate and up differ in size");
  if (out.data() != gate.data()) resize(out, gate.rows(), gate.cols());
  cpu::silu_mul(gate.data(), up.data(), gate.size(), out.data());
}

// The parts one by one (the mapped weights are not stacked: that would copy them).
void CpuBackend::qkv_rope(const Tensor& x, const StackedWeights& w, Tensor&, Tensor& q, Tensor& k,
                          Tensor& v) {
  DSMATH_CHECK(w.parts.size() == 3, "qkv_rope: ", w.parts.size(), " weights, not q, k and v");
  linear(x, w.parts[0], q);
  linear(x, w.parts[1], k);
  linear(x, w.parts[2], v);
  rope(q, heads_);
  rope(k, kv_heads_);
}

void CpuBackend::gate_up_silu(const Tensor& x, const StackedWeights& w, Tensor& scratch,
                              Tensor& out) {
  DSMATH_CHECK(w.parts.size() == 2, "gate_up_silu: ", w.parts.size(), " weights, not gate and up");
  linear(x, w.parts[0], out);
  linear(x, w.parts[1], scratch);
  silu_mul(out, scratch, out);
}

void CpuBackend::add(Tensor& x, const Tensor& y) {
  check_f32_on(x, Device::kCpu, "add");
  check_f32_on(y, Device::kCpu, "add");
  DSMATH_CHECK(x.size() == y.size(), "add: tensors differ in size");
  cpu::add(x.data(), y.data(), x.size());
}

void CpuBackend::copy_kv_block(int32_t src, int32_t dst) {
  kv_->copy_block(src, dst);
}

void CpuBackend::begin_step(const StepInputs& step) {
  check_token_ids(step.token_ids);  // placeholders are filled on the host for the CPU
  step_ = step;
  group_shared_prefixes();
}

// Decode sequences (one token) whose tables start with the same block form a group: samples
// forked from one prompt, or prompts that start alike (the prefix cache's shared blocks). The
// blocks two decodes share are full: each writes its own last block (copy-on-write made it so).
// A group reads the whole softmax chunks of the blocks all its members start with together,
// never past a member's own last key; any other sequence is a group of one.
void CpuBackend::group_shared_prefixes() {
  const std::span<const AttentionSequence> seqs = step_.sequences;
  groups_.clear();
  members_.clear();
  member_tables_.clear();
  member_kv_lens_.clear();
  grouped_.assign(seqs.size(), 0);
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (grouped_[i]) continue;
    AttentionGroup g{members_.size(), 0, 0};
    const AttentionSequence& first = seqs[i];
    const bool decode = first.tokens == 1 && !first.block_table.empty();
    int64_t shared_blocks = int64_t(first.block_table.size());
    int64_t shortest = std::numeric_limits<int64_t>::max();
    for (size_t j = i; j < seqs.size(); ++j) {
      const AttentionSequence& s = seqs[j];
      if (j > i && (!decode || grouped_[j] || s.tokens != 1 || s.block_table.empty() ||
                    s.block_table[0] != first.block_table[0]))
        continue;
      grouped_[j] = 1;
      members_.push_back(j);
      member_tables_.push_back(s.block_table.data());
      member_kv_lens_.push_back(s.first_position + s.tokens);
      const auto same = std::mismatch(first.block_table.begin(), first.block_table.end(),
                                      s.block_table.begin(), s.block_table.end());
      shared_blocks = std::min<int64_t>(shared_blocks, same.first - first.block_table.begin());
      shortest = std::min(shortest, member_kv_lens_.back());
      if (!decode) break;
    }
    g.count = members_.size() - g.first;
    if (g.count > 1)
      g.shared_keys = std::min(shared_blocks * kv_->block_size(), shortest - 1) /
                      cpu::kAttentionChunk * cpu::kAttentionChunk;
    groups_.push_back(g);
  }
}

void CpuBackend::attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                           Tensor& out) {
  for (const Tensor* t : {&q, &k, &v}) check_f32_on(*t, Device::kCpu, "attention");
  const int64_t q_width = heads_ * head_dim_, kv_width = kv_heads_ * head_dim_;
  DSMATH_CHECK(q.cols() == q_width && k.cols() == kv_width && v.cols() == kv_width,
               "attention: q, k, v widths do not match the prepared heads");
  resize(out, q.rows(), q_width);
  // Every write first: a sequence reads its own blocks and full blocks of earlier steps, and a
  // block two sequences share is never written (the step's copy-on-write copies came first).
  for (const AttentionSequence& s : step_.sequences)
    kv_->write(layer, s.block_table, s.first_position, s.tokens, k.data() + s.row * kv_width,
               v.data() + s.row * kv_width);
  for (const AttentionGroup& g : groups_) {
    if (g.count == 1)
      attend_alone(layer, step_.sequences[members_[g.first]], q, out);
    else
      shared_decode(layer, g, q, out);
  }
}

void CpuBackend::attend_alone(int64_t layer, const AttentionSequence& s, const Tensor& q,
                              Tensor& out) {
  const int64_t q_width = heads_ * head_dim_, kv_width = kv_heads_ * head_dim_;
  const cpu::AttentionShape shape{
      s.tokens, s.first_position + s.tokens, heads_, kv_heads_, head_dim_, kv_width};
  const float* qs = q.data() + s.row * q_width;
  float* o = out.data() + s.row * q_width;
  if (kv_->dtype() == DType::BF16)
    cpu::causal_attention_paged(qs, kv_->keys_bf16(layer), kv_->values_bf16(layer),
                                s.block_table.data(), kv_->block_size(), shape, o);
  else
    cpu::causal_attention_paged(qs, kv_->keys(layer), kv_->values(layer), s.block_table.data(),
                                kv_->block_size(), shape, o);
}

// The group's attention through cpu::decode_attention_shared: its members' queries side by side,
// their output rows of this layer's `out`.
void CpuBackend::shared_decode(int64_t layer, const AttentionGroup& g, const Tensor& q,
                               Tensor& out) {
  const int64_t q_width = heads_ * head_dim_;
  shared_q_.resize(g.count * size_t(q_width));
  member_outs_.clear();
  for (size_t m = 0; m < g.count; ++m) {
    const int64_t row = step_.sequences[members_[g.first + m]].row;
    std::copy_n(q.data() + row * q_width, q_width, shared_q_.data() + m * size_t(q_width));
    member_outs_.push_back(out.data() + row * q_width);
  }
  const cpu::SharedDecode sd{shared_q_.data(),
                             member_tables_.data() + g.first,
                             member_kv_lens_.data() + g.first,
                             member_outs_.data(),
                             int64_t(g.count),
                             g.shared_keys,
                             kv_->block_size()};
  const cpu::AttentionShape shape{1, 1, heads_, kv_heads_, head_dim_, kv_heads_ * head_dim_};
  if (kv_->dtype() == DType::BF16)
    cpu::decode_attention_shared(sd, kv_->keys_bf16(layer), kv_->values_bf16(layer), shape);
  else
    cpu::decode_attention_shared(sd, kv_->keys(layer), kv_->values(layer), shape);
}

}  // namespace dsmath
