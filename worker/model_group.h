// One rank's part of a worker group, loaded the same way by every subcommand: its shard of the
// checkpoint, the KV cache, the step runner, and on the driver (rank 0) the tokenizer and the
// engine's configuration.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/tokenizer/tokenizer.h"
#include "kernels/cpu/gemm.h"
#include "worker/comm/communicator.h"
#include "worker/engine/engine.h"
#include "worker/model/make_backend.h"

namespace CLI {
class App;
}

namespace dsmath {

struct GroupOptions {
  std::string model_dir;
  Device device = Device::kCpu;  // --device cpu | cuda
  int threads = 0;               // per rank; 0: the node's cores / its ranks
  double kv_cache_gib = 4.0;
  DType kv_dtype = DType::F32;                                            // --kv-dtype f32 | bf16
  cpu::MatmulPrecision matmul_precision = cpu::MatmulPrecision::Highest;  // highest | medium
  int pp = 1;                      // --pp: pipeline stages (world size = tp x pp)
  std::vector<int64_t> pp_layers;  // --pp-layers 16,14: layers per stage (default: even)
  int micro_batches = 0;           // --micro-batches: steps in flight (0: one per stage)
  std::string overlap = "auto";    // --overlap auto | on | off (auto: on for cuda at pp 1)
  int32_t max_step_tokens = 512;
  bool prefix_cache = true;
  int collective_timeout_seconds = 600;  // --collective-timeout-seconds (0: no watchdog)
};

// --model, --device, --pp, --pp-layers, --micro-batches, --overlap, --threads, --kv-cache-gib,
// --kv-dtype, --matmul-precision, --max-step-tokens, --no-prefix-cache,
// --collective-timeout-seconds.
void add_group_flags(CLI::App& command, GroupOptions& options);

class ModelGroup {
 public:
  // Every rank calls it. A failure on any rank (bad flag, bad tp, a shard missing on one
  // machine, or `driver_setup` throwing on rank 0) stops all of them with that rank's message.
  // `driver_setup` runs on rank 0 once the tokenizer is loaded.
  ModelGroup(const GroupOptions& options, Communicator& comm,
             const std::function<void(const Tokenizer&)>& driver_setup = {});
  ModelGroup(const ModelGroup&) = delete;
  ModelGroup& operator=(const ModelGroup&) = delete;

  bool is_driver() const { return runner_->is_driver(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  const Topology& topology() const { return topology_; }  // the group's tp x pp layout
  ModelRunner& runner() { return *runner_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }  // driver only
  EngineConfig engine_config() const;                         // driver only

 private:
  GroupOptions options_;
  std::optional<Checkpoint> checkpoint_;
  std::optional<Tokenizer> tokenizer_;
  Topology topology_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Communicator> stage_comm_;   // the stage's tp ranks (MPI), at pp > 1
  std::unique_ptr<Communicator> model_comm_;   // NCCL for a GPU group at tp > 1
  std::unique_ptr<Communicator> stage_links_;  // NCCL between a GPU group's stages at pp > 1
  std::optional<LlamaModel> model_;
  std::optional<ModelRunner> runner_;
};

}  // namespace dsmath
