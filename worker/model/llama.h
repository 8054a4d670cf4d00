// LlamaForCausalLM forward pass on the CPU (DeepSeekMath 7B and any LLaMA checkpoint).
//
// One call runs the new tokens of a batch of sequences: a whole prompt, a prompt chunk or
// one decode token each. All tokens of the batch go through the linear layers together
// (weights are read once per step); attention runs per sequence over its own KV cache.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "kernels/cpu/rope.h"
#include "worker/model/kv_cache.h"
#include "worker/model/llama_weights.h"

namespace dsmath {

struct SequenceChunk {
  KVCache* cache;                   // positions continue from cache->length()
  std::span<const int32_t> tokens;  // at least one
};

enum class LogitsFor { kLastToken, kAllTokens };

class LlamaModel {
 public:
  explicit LlamaModel(const Checkpoint& checkpoint);

  const ModelConfig& config() const { return config_; }
  KVCache new_cache(int64_t capacity) const { return KVCache(config_, capacity); }

  // Appends each chunk's keys/values to its cache and returns logits, row-major
  // [rows, vocab]: one row per chunk (its last token) or one per token of every chunk.
  std::vector<float> forward(std::span<const SequenceChunk> batch,
                             LogitsFor which = LogitsFor::kLastToken);

 private:
  void attention_block(const LayerWeights& w, int64_t layer, std::span<const SequenceChunk> batch,
                       std::span<const int64_t> first_position, int64_t tokens);
  void mlp_block(const LayerWeights& w, int64_t tokens);

  ModelConfig config_;
  LlamaWeights weights_;
  cpu::RopeTable rope_;
  // Activations of the current step, [tokens, width]; reused across steps.
  std::vector<float> x_, normed_, q_, k_, v_, attn_, proj_, gate_, up_;
  std::vector<int32_t> positions_;
};

}  // namespace dsmath
