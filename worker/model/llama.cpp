#include "worker/model/llama.h"

#include "common/core/error.h"

namespace dsmath {

ModelConfig LlamaModel::stage_config(const ModelConfig& config, const PipelineStage& stage) {
  ModelConfig c = config;
  const int64_t end = stage.end_layer < 0 ? config.num_hidden_layers : stage.end_layer;
  c.num_hidden_layers = end - stage.first_layer;
  return c;
}

LlamaModel::LlamaModel(const Checkpoint& checkpoint, Backend& backend, Communicator& comm,
                       int32_t kv_blocks, int32_t block_size, const PipelineStage& stage)
    : config_(checkpoint.config()),
      backend_(backend),
      comm_(comm),
      layout_(TpLayout::make(config_, comm.topology().tp_size, comm.topology().tp_rank)),
      stage_(stage),
      weights_(
          LlamaWeights::bind(checkpoint, layout_, backend, stage.first_layer,
                             stage_config(config_, stage).num_hidden_layers + stage.first_layer,
                             stage.first(), stage.last())),
      kv_blocks_(kv_blocks),
      block_size_(block_size) {
  // The model hands activation pointers to the communicator: both must use the same memory.
  DSMATH_CHECK(layout_.tp_size == 1 || comm.device_memory() == (backend.device() != Device::kCpu),
               "a ", device_name(backend.device()), " backend needs a communicator on ",
               backend.device() == Device::kCpu ? "host" : "device", " memory");
  DSMATH_CHECK(stage.topology.pp_size == 1 || stage.links != nullptr,
               "pipeline stage without a communicator to its neighbours");
  DSMATH_CHECK(stage.topology.pp_size == 1 ||
                   stage.activation_links().device_memory() == (backend.device() != Device::kCpu),
               "a ", device_name(backend.device()),
               " backend needs stage-to-stage links on the same memory");
  backend_.prepare(stage_config(config_, stage), layout_.local_heads, layout_.local_kv_heads,
                   kv_blocks, block_size);
}

bool LlamaModel::is_driver() const {
  return stage_.links != nullptr ? stage_.topology.is_driver() : comm_.topology().is_driver();
}

bool LlamaModel::logits_holder() const {
  if (stage_.links == nullptr) return is_driver();
  return stage_.last() && stage_.topology.tp_rank == 0;
}

int64_t LlamaModel::logit_rows(const StepPlan& plan) {
  int64_t rows = 0;
  for (const StepSequence& s : plan.sequences)
    rows += plan.all_logits ? int64_t(s.tokens.size()) : int64_t(s.logits);
  return rows;
}

std::vector<float> LlamaModel::forward(const StepPlan& plan) {
  std::vector<float> logits = launch(plan);
  if (stage_.links == nullptr || logit_rows(plan) == 0) return logits;
  // pp > 1: the last stage's tp rank 0 hands the logits to the driver on the first stage.
  if (logits_holder()) stage_.links->send(logits.data(), logits.size(), 0);
  if (!is_driver()) return {};
  logits.resize(size_t(logit_rows(plan) * config_.vocab_size));
  stage_.links->recv(logits.data(), logits.size(), stage_.logits_rank());
  return logits;
}

std::vector<float> LlamaModel::launch(const StepPlan& plan) {
  const int64_t rows = run(plan);
  if (rows == 0) return {};
  return logits_to_host(rows);
}

LogitsOnDevice LlamaModel::launch_on_device(const StepPlan& plan, SampledTokens sampled) {
  const int64_t rows = run(plan, sampled);
  if (rows == 0) return {};
  const Tensor& logits = layout_.tp_size > 1 ? gathered_logits_ : logits_;
  return {logits.data(), rows, config_.vocab_size, layout_.tp_size};
}

int64_t LlamaModel::run(const StepPlan& plan, SampledTokens sampled) {
  for (const KVBlockCopy& copy : plan.copies) backend_.copy_kv_block(copy.src, copy.dst);
  const StepRows rows = flatten(plan, sampled);
  backend_.begin_step({rows.ids, rows.positions, rows.seqs, rows.logit_rows, sampled});
  // A decode step runs the same kernels as every other step of its batch size (what changes
  // is in the staged inputs), so a GPU backend replays them as one graph keyed by that size.
  const int64_t n = int64_t(rows.ids.size());
  const bool logits = !rows.logit_rows.empty();
  backend_.run_step(rows.decode ? uint64_t(n) : 0, [&] { compute(n, logits); });
  comm_.complete();
  if (stage_.activations) stage_.activations->complete();
  if (!logits || !logits_holder()) return 0;
  return int64_t(rows.logit_rows.size());
}

// The plan as the backend takes it: the step's tokens, sequence after sequence, and where each
// sequence's rows are.
LlamaModel::StepRows LlamaModel::flatten(const StepPlan& plan, SampledTokens sampled) const {
  const ModelConfig& c = config_;
  StepRows rows;
  rows.decode = !plan.all_logits;
  for (const StepSequence& s : plan.sequences) {
    DSMATH_CHECK(!s.tokens.empty(), "step plan: a sequence has no tokens");
    const int64_t kv_len = s.first_position + int64_t(s.tokens.size());
    DSMATH_CHECK(int64_t(s.block_table.size()) * block_size_ >= kv_len,
                 "step plan: block table too short for ", kv_len, " positions");
    rows.decode = rows.decode && s.tokens.size() == 1 && s.logits;
    rows.seqs.push_back(
        {int64_t(rows.ids.size()), int64_t(s.tokens.size()), s.first_position, s.block_table});
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      // Checked here: the vocab-parallel embedding would turn a bad id into silent zeros. A
      // placeholder (overlap) must name one of the outcomes the device fills it from.
      if (is_token_placeholder(s.tokens[i])) {
        DSMATH_CHECK(sampled.outcomes != nullptr && placeholder_sample(s.tokens[i]) < sampled.count,
                     "step plan: token placeholder ", s.tokens[i], " names none of the ",
                     sampled.count, " sampled tokens on the device");
      } else {
        DSMATH_CHECK(s.tokens[i] < c.vocab_size, "token id ", s.tokens[i],
                     " is outside the vocabulary of ", c.vocab_size);
      }
      if (plan.all_logits || (s.logits && i + 1 == s.tokens.size()))
        rows.logit_rows.push_back(int64_t(rows.ids.size()));  // all, or the last that samples
      rows.ids.push_back(s.tokens[i]);
      rows.positions.push_back(s.first_position + int32_t(i));
    }
  }
  return rows;
}

// This stage's part of the step on the staged inputs (`rows` tokens), up to the gathered
// logits when it is the last stage and the step has logit rows.
void LlamaModel::compute(int64_t rows, bool logits) {
  const ModelConfig& c = config_;
  if (stage_.first()) {
    // Vocab-parallel embedding: each rank fills the rows of the ids it holds, zeros elsewhere.
    backend_.embedding(weights_.embed_tokens, layout_.vocab_begin, x_);
    if (layout_.tp_size > 1) comm_.all_reduce_sum(x_.data(), size_t(x_.size()));
  } else {
    backend_.resize(x_, rows, c.hidden_size);
    stage_.activation_links().recv(x_.data(), size_t(x_.size()), stage_.previous_rank());
  }

  for (size_t layer = 0; layer < weights_.layers.size(); ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    attention_block(int64_t(layer), w);  // the KV cache holds this stage's layers, from 0
    mlp_block(w);
  }
  if (!stage_.last()) {
    stage_.activation_links().send(x_.data(), size_t(x_.size()), stage_.next_rank());
    return;
  }
  if (!logits) return;  // prompt chunks only: no lm_head this step

  backend_.rms_norm(x_, weights_.final_norm, float(c.rms_norm_eps), normed_);
  backend_.gather_logit_rows(normed_, last_);
  vocab_parallel_logits(last_);
}

// x += o_proj(attention(rope(q_proj(h)), rope(k_proj(h)), v_proj(h))),  h = rms_norm(x)
void LlamaModel::attention_block(int64_t layer, const LayerWeights& w) {
  backend_.rms_norm(x_, w.input_norm, float(config_.rms_norm_eps), normed_);
  backend_.qkv_rope(normed_, w.qkv_proj, scratch_, q_, k_, v_);  // one GEMM where w is stacked
  backend_.attention(layer, q_, k_, v_, attn_);
  row_parallel_linear(attn_, w.o_proj, proj_);
  backend_.add(x_, proj_);
}

// x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = rms_norm(x)
void LlamaModel::mlp_block(const LayerWeights& w) {
  backend_.rms_norm(x_, w.post_attention_norm, float(config_.rms_norm_eps), normed_);
  backend_.gate_up_silu(normed_, w.gate_up_proj, scratch_, gate_);
  row_parallel_linear(gate_, w.down_proj, proj_);
  backend_.add(x_, proj_);
}

// y = x W^T where each rank holds a slice of the input dimension K. The sum over K is taken
// in one fixed order whatever the tp: K falls into kCanonicalChunks ranges added by a pairwise
// tree in chunk order. Each rank holds consecutive chunks and computes its subtree inside the
// kernel (linear_chunked); the ranks' sums are gathered and added by the top of the same tree
// in rank order. Logits are therefore bitwise the same at tp 1, 2, 4 and 8. Another tp (3, 6,
// ...) uses a plain all-reduce and differs in the last bits, as does a backend without
// fixed-order sums (CUDA: cuBLAS picks its own split of K by shape).
void LlamaModel::row_parallel_linear(const Tensor& x, const WeightView& w, Tensor& y) {
  const int64_t tp = layout_.tp_size, chunks = row_parallel_chunks(tp, w.cols);
  if (!backend_.fixed_order_sums() || chunks == 0) {
    backend_.linear(x, w, y);
    comm_.all_reduce_sum(y.data(), size_t(y.size()));
    return;
  }
  backend_.linear_chunked(x, w, chunks, tp == 1 ? y : rank_sum_);
  if (tp == 1) return;
  backend_.resize(gathered_, tp * rank_sum_.rows(), rank_sum_.cols());
  comm_.all_gather(rank_sum_.data(), size_t(rank_sum_.size()), gathered_.data());
  backend_.tree_sum(gathered_, tp, y);
}

// Each rank computes the logits of its vocab rows; they are gathered where they were computed
// (device memory on a GPU), [rank][row][local_vocab].
void LlamaModel::vocab_parallel_logits(const Tensor& rows) {
  backend_.linear(rows, weights_.lm_head, logits_);
  if (layout_.tp_size == 1) return;
  backend_.resize(gathered_logits_, layout_.tp_size * rows.rows(), layout_.local_vocab);
  comm_.all_gather(logits_.data(), size_t(logits_.size()), gathered_logits_.data());
}

// The logits holder copies the gathered logits to the host and reassembles full rows.
std::vector<float> LlamaModel::logits_to_host(int64_t n) {
  const int64_t local = layout_.local_vocab, tp = layout_.tp_size;
  std::vector<float> gathered(size_t(tp * n * local));
  backend_.to_host(tp > 1 ? gathered_logits_ : logits_, gathered.data());
  if (tp == 1) return gathered;
  std::vector<float> logits(size_t(n * config_.vocab_size));
  for (int64_t r = 0; r < tp; ++r)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(gathered.data() + (r * n + i) * local, local,
                  logits.data() + i * config_.vocab_size + r * local);
  return logits;
}

}  // namespace dsmath
