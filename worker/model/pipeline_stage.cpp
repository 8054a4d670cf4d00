#include "worker/model/pipeline_stage.h"

#include <numeric>

#include "common/core/error.h"

namespace dsmath {

std::vector<int64_t> PipelineStage::layer_split(const ModelConfig& config, int pp,
                                                const std::vector<int64_t>& split) {
  const int64_t layers = config.num_hidden_layers;
  DSMATH_CHECK(pp >= 1 && pp <= layers, "--pp ", pp, " is outside 1..", layers,
               " (the model's num_hidden_layers): every stage needs a layer");
  if (split.empty()) {
    std::vector<int64_t> even(size_t(pp), layers / pp);
    for (int64_t s = 0; s < layers % pp; ++s) ++even[size_t(s)];
    return even;
  }
  DSMATH_CHECK(int64_t(split.size()) == pp, "--pp-layers has ", split.size(), " counts for --pp ",
               pp);
  for (int64_t n : split)
    DSMATH_CHECK(n >= 1, "--pp-layers: every stage needs at least one layer, got ", n);
  const int64_t total = std::accumulate(split.begin(), split.end(), int64_t(0));
  DSMATH_CHECK(total == layers, "--pp-layers adds up to ", total, " layers; the model has ",
               layers);
  return split;
}

PipelineStage PipelineStage::make(const ModelConfig& config, const Topology& topology,
                                  const std::vector<int64_t>& split, Communicator* links) {
  const std::vector<int64_t> counts = layer_split(config, topology.pp_size, split);
  PipelineStage stage;
  stage.topology = topology;
  stage.links = topology.pp_size > 1 ? links : nullptr;
  DSMATH_CHECK(topology.pp_size == 1 || links != nullptr, "pipeline stage without links");
  stage.first_layer = std::accumulate(counts.begin(), counts.begin() + topology.stage, int64_t(0));
  stage.end_layer = stage.first_layer + counts[size_t(topology.stage)];
  return stage;
}

}  // namespace dsmath
