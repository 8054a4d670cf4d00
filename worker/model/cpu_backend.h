// The CPU backend: the kernels of kernels/cpu (OpenMP threads, AVX2/AVX-512 where the CPU has
// them) on host memory. Weights stay where the checkpoint maps them; where the CPU's matmul path
// reads bf16 faster in another layout (AVX512-BF16: dot-pair panels), place() also keeps that
// copy, made once here.
#pragma once

#include <algorithm>
#include <memory>
#include <optional>
#include <vector>

#include "kernels/cpu/rope.h"
#include "worker/model/backend.h"
#include "worker/model/paged_kv_cache.h"

namespace dsmath {

class CpuBackend final : public Backend {
 public:
  // kv_dtype: what the KV cache stores, F32 (exact) or BF16 (half the bytes per token).
  explicit CpuBackend(DType kv_dtype = DType::F32) : kv_dtype_(kv_dtype) {}

  Device device() const override { return Device::kCpu; }
  bool fixed_order_sums() const override { return true; }
  void resize(Tensor& t, int64_t rows, int64_t cols) override;
  WeightView place(const WeightView& host) override { return place_packed(host, 1); }
  WeightView place_row_parallel(const WeightView& host, int64_t chunks) override {
    return place_packed(host, std::max<int64_t>(1, chunks));
  }
  WeightView place_table(const WeightView& host) override { return host; }
  NormWeight place(const NormWeight& host, int64_t) override { return host; }
  void upload(const float* host, int64_t rows, int64_t cols, Tensor& t) override;
  void to_host(const Tensor& t, float* host) override;

  void prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads, int32_t num_blocks,
               int32_t block_size) override;
  void begin_step(const StepInputs& step) override;
  void copy_kv_block(int32_t src, int32_t dst) override;

  void embedding(const WeightView& table, int64_t first_row, Tensor& out) override;
  void rms_norm(const Tensor& x, const NormWeight& gamma, float eps, Tensor& out) override;
  void linear(const Tensor& x, const WeightView& w, Tensor& y) override;
  void linear_chunked(const Tensor& x, const WeightView& w, int64_t chunks, Tensor& y) override;
  void tree_sum(Tensor& x, int64_t parts, Tensor& out) override;
  void rope(Tensor& x, int64_t heads) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void qkv_rope(const Tensor& x, const StackedWeights& w, Tensor& scratch, Tensor& q, Tensor& k,
                Tensor& v) override;
  void gate_up_silu(const Tensor& x, const StackedWeights& w, Tensor& scratch,
                    Tensor& out) override;
  void add(Tensor& x, const Tensor& y) override;
  void attention(int64_t layer, const Tensor& q, const Tensor& k, const Tensor& v,
                 Tensor& out) override;
  void gather_logit_rows(const Tensor& x, Tensor& out) override;

 private:
  // The step's sequences as attention runs them: groups of decodes whose caches start in the
  // same blocks (cpu::decode_attention_shared), and everything else alone. Found once a step in
  // begin_step (the block tables are the same for every layer); the vectors are reused.
  struct AttentionGroup {
    size_t first = 0, count = 0;  // members_[first, first + count)
    int64_t shared_keys = 0;      // the keys every member reads together
  };
  void group_shared_prefixes();
  void attend_alone(int64_t layer, const AttentionSequence& s, const Tensor& q, Tensor& out);
  void shared_decode(int64_t layer, const AttentionGroup& g, const Tensor& q, Tensor& out);

  WeightView place_packed(const WeightView& host, int64_t chunks);

  std::vector<std::shared_ptr<const void>> packed_weights_;  // what placed views' `packed` are
  DType kv_dtype_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
  std::optional<cpu::RopeTable> rope_;
  std::unique_ptr<PagedKVCache> kv_;
  StepInputs step_;
  std::vector<AttentionGroup> groups_;
  std::vector<size_t> members_;                // indices into step_.sequences, group by group
  std::vector<const int32_t*> member_tables_;  // each member's block table
  std::vector<int64_t> member_kv_lens_;        // each member's cached length, its own key included
  std::vector<float*> member_outs_;            // a group's output rows (this layer's `out`)
  std::vector<char> grouped_;
  std::vector<float> shared_q_;  // a group's queries, side by side
};

}  // namespace dsmath
