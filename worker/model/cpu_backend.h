// The CPU backend: the kernels of kernels/cpu (OpenMP threads, AVX2/AVX-512 where the CPU has
// them) on host memory. Weights stay where the checkpoint maps them.
#pragma once

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
  WeightView place(const WeightView& host) override { return host; }
  NormWeight place(const NormWeight& host, int64_t) override { return host; }
  void upload(const float* host, int64_t rows, int64_t cols, Tensor& t) override;
  void to_host(const Tensor& t, float* host) override;

  void prepare(const ModelConfig& config, int64_t heads, int64_t kv_heads, int32_t num_blocks,
               int32_t block_size) override;
  void begin_step(const StepInputs& step) override {
    check_token_ids(step.token_ids);  // placeholders are filled on the host for the CPU
    step_ = step;
  }
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
  std::vector<size_t> shared_prefix_group(size_t i, std::vector<bool>& done) const;
  void shared_decode(int64_t layer, const std::vector<size_t>& group, const Tensor& q, Tensor& out);

  DType kv_dtype_;
  int64_t heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
  std::optional<cpu::RopeTable> rope_;
  std::unique_ptr<PagedKVCache> kv_;
  StepInputs step_;
  std::vector<float> shared_q_;  // a shared decode group's queries, side by side
};

}  // namespace dsmath
