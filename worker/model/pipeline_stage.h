// Which layers a rank's pipeline stage runs, and whom it exchanges activations with. With pp
// stages, stage s runs layers [first_layer, end_layer): the first also the embedding, the last
// the final norm and lm_head. Each tp rank of stage s receives the hidden state from the same
// tp rank of stage s - 1 and sends it to stage s + 1 (the state is replicated across a stage's
// tp ranks after its all-reduce); the last stage's tp rank 0 samples and sends the tokens to the
// driver (world rank 0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/checkpoint/model_config.h"
#include "worker/comm/communicator.h"

namespace dsmath {

struct PipelineStage {
  Topology topology;              // of the whole group (world ranks, stage, tp)
  int64_t first_layer = 0;        // [first_layer, end_layer)
  int64_t end_layer = -1;         // -1: up to the last layer
  Communicator* links = nullptr;  // the world communicator (host memory); null at pp 1
  // Where hidden states go stage to stage: links on the CPU; on GPUs a world communicator on
  // device memory (NCCL send/recv on the compute stream).
  Communicator* activations = nullptr;

  Communicator& activation_links() const { return activations ? *activations : *links; }

  bool first() const { return topology.first_stage(); }
  bool last() const { return topology.last_stage(); }
  int previous_rank() const { return topology.rank_in_stage(topology.stage - 1, topology.tp_rank); }
  int next_rank() const { return topology.rank_in_stage(topology.stage + 1, topology.tp_rank); }
  int logits_rank() const { return topology.rank_in_stage(topology.pp_size - 1, 0); }

  // Layers per stage: `split` (from --pp-layers, summing to the layer count) or, when empty,
  // as even as possible (the first stages get one more). Throws naming --pp / --pp-layers when
  // a stage would get no layer or the counts do not add up.
  static std::vector<int64_t> layer_split(const ModelConfig& config, int pp,
                                          const std::vector<int64_t>& split = {});
  // This rank's stage of `topology` under `split` (see layer_split).
  static PipelineStage make(const ModelConfig& config, const Topology& topology,
                            const std::vector<int64_t>& split, Communicator* links);
};

}  // namespace dsmath
