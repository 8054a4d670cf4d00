// LlamaForCausalLM forward (DeepSeekMath 7B and any LLaMA checkpoint), tensor-parallel.
//
// One call runs one StepPlan: the new tokens of a batch of sequences (whole prompts, prompt
// chunks or single decode tokens, mixed). All tokens of the step go through each linear layer
// together; attention runs per sequence over its blocks of the paged KV cache. Every rank of
// the tensor-parallel group runs the same plan on its own weight shard (TpLayout); the only
// communication is one all-reduce at the end of each row-parallel linear (o_proj, down_proj),
// one after the vocab-parallel embedding, and the gather of the vocab-parallel logits. Under
// pipeline parallelism (PipelineStage) a rank runs its stage's layers only: the hidden state
// arrives from the previous stage and leaves for the next one, and the last stage sends the
// logits to the driver.
#pragma once

#include <cstdint>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "worker/comm/communicator.h"
#include "worker/model/backend.h"
#include "worker/model/llama_weights.h"
#include "worker/model/pipeline_stage.h"
#include "worker/model/step_plan.h"
#include "worker/model/tp_layout.h"

namespace dsmath {

// A step's logits left where the backend computed them (device memory on a GPU), for a sampler
// there: [rows, vocab] row-major, or at tp > 1 the gathered vocab-parallel shards
// [tp][rows][vocab / tp]. Valid until the next launch.
struct LogitsOnDevice {
  const float* data = nullptr;
  int64_t rows = 0, vocab = 0, tp = 1;
};

class LlamaModel {
 public:
  // Binds this rank's weight shard and allocates `kv_blocks` KV blocks of `block_size` tokens.
  // `comm` is the stage's tensor-parallel group; `stage` defaults to the whole model.
  LlamaModel(const Checkpoint& checkpoint, Backend& backend, Communicator& comm, int32_t kv_blocks,
             int32_t block_size = 16, const PipelineStage& stage = {});

  const ModelConfig& config() const { return config_; }
  const TpLayout& layout() const { return layout_; }
  const PipelineStage& stage() const { return stage_; }
  int32_t kv_blocks() const { return kv_blocks_; }
  int32_t block_size() const { return block_size_; }
  size_t shard_bytes() const { return weights_.bytes(config_); }  // this rank's weights
  const LlamaWeights& weights() const { return weights_; }
  // The KV cache's layer count for `stage`, which holds the KV of its own layers only.
  static ModelConfig stage_config(const ModelConfig& config, const PipelineStage& stage);

  // Runs the plan. Returns logits on the driver (world rank 0), row-major [rows, vocab_size]: one
  // row per sequence whose `logits` is set (its last token), or one per token when
  // plan.all_logits. Other ranks get an empty vector. (Under pipeline parallelism the last
  // stage sends them to the driver; ModelRunner instead samples there.)
  std::vector<float> forward(const StepPlan& plan);

  // This rank's part of the plan, without waiting for later stages: returns the logits on the
  // rank that holds them (logits_holder()), an empty vector elsewhere. Several launched steps
  // (micro-batches of disjoint sequences) may be in flight through the stages at once.
  std::vector<float> launch(const StepPlan& plan);
  // launch() without the copy to the host: the logits stay on the backend's device (rows 0
  // where launch would return none). The plan's token placeholders are filled from `sampled`,
  // the previous step's outcomes on this device.
  LogitsOnDevice launch_on_device(const StepPlan& plan, SampledTokens sampled = {});
  Backend& backend() const { return backend_; }
  // Whether launch returns this step's logits here: the driver at pp 1, the last stage's tp
  // rank 0 under pipeline parallelism.
  bool logits_holder() const;
  // Rows of logits a plan gives: sampled sequences, or every token with all_logits.
  static int64_t logit_rows(const StepPlan& plan);

 private:
  struct StepRows {
    std::vector<int32_t> ids, positions;
    std::vector<AttentionSequence> seqs;
    std::vector<int64_t> logit_rows;
    bool decode = false;  // one sampled token per sequence
  };
  StepRows flatten(const StepPlan& plan, SampledTokens sampled) const;
  // This rank's part of the plan; returns the rows of logits it holds afterwards (0 elsewhere).
  int64_t run(const StepPlan& plan, SampledTokens sampled = {});
  void compute(int64_t rows, bool logits);
  void attention_block(int64_t layer, const LayerWeights& w);
  void mlp_block(const LayerWeights& w);
  // y = x W^T on this rank's input columns, summed over ranks: the only all-reduce of a layer.
  void row_parallel_linear(const Tensor& x, const WeightView& w, Tensor& y);
  void vocab_parallel_logits(const Tensor& rows);
  std::vector<float> logits_to_host(int64_t rows);
  bool is_driver() const;

  ModelConfig config_;
  Backend& backend_;
  Communicator& comm_;
  TpLayout layout_;
  PipelineStage stage_;
  LlamaWeights weights_;
  int32_t kv_blocks_, block_size_;
  // Activations of the current step, [tokens, width]; storage reused across steps.
  Tensor x_, normed_, q_, k_, v_, attn_, proj_, gate_, last_, logits_;
  Tensor scratch_;              // the backend's, for qkv_rope and gate_up_silu
  Tensor rank_sum_, gathered_;  // row_parallel_linear's fixed-order sum
  Tensor gathered_logits_;      // [tp * rows, local_vocab]
};

}  // namespace dsmath
