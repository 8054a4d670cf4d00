// Token sampling on the GPU, one block per sampled row (sampling.cu opens with the math). The
// host prepares each row's parameters: the Philox uniform of its draw (computed on the host
// from the row's key, worker/engine/rng.h) and its penalties as a list of the tokens they
// touch. The kernel writes one outcome per row. Everything launches on `stream` and returns at
// once. worker/engine/device_sampler.* drives it.
#pragma once

#include "kernels/cuda/launch.h"

namespace dsmath::cuda {

constexpr int kMaxTopLogprobs = 20;
// Masses are fixed point p x 2^32 in 64-bit integers; sums stay exact in a double up to this.
constexpr int64_t kMaxSamplingVocab = int64_t(1) << 21;

// What one row does. Off: top_k 0 (or >= vocab), top_p 1, min_p 0.
struct SampleRowParams {
  int64_t row = 0;    // the logits row it reads
  int64_t work = -1;  // its row of the work buffer (penalized logits, probabilities); -1:
                      // none needed (greedy and not penalized)
  int64_t top_k = 0;
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  double uniform = 0;            // the draw's u in [0, 1)
  float inv_temperature = 1.0f;  // f32(1 / T), as the host forms it
  float min_p = 0.0f;            // f32(min_p)
  int32_t greedy = 0;            // 1: the first argmax of the (penalized) logits
  int32_t logprob = 0;           // 1: the chosen token's logprob (and top_logprobs)
  int32_t top_logprobs = 0;      // 0..kMaxTopLogprobs
  int32_t penalty_begin = 0;     // its entries in the penalty list
  int32_t penalty_count = 0;
  int32_t unused = 0;
};

// A token a penalty touches, once per row: z = z > 0 ? f32(z / rp) : f32(z * rp) (f64
// arithmetic) when `repeat`, then z -= subtract when `subtracted`.
struct PenaltyEntry {
  int32_t token = 0;
  int32_t repeat = 0;
  int32_t subtracted = 0;
  float subtract = 0;  // f32(frequency_penalty x count + presence_penalty), the host's
};

enum SampleStatus : int32_t { kSampled = 0, kNonFiniteLogit = 1 };

struct SampleRowOutcome {
  int32_t token;
  float logprob;  // 0 unless asked
  int32_t status;
  int32_t bad_token;  // kNonFiniteLogit: the first non-finite logit and its value
  float bad_value;
  int32_t top_count;
  int32_t top_tokens[kMaxTopLogprobs];  // best first
  float top_logprobs[kMaxTopLogprobs];
};

// out[i, r * local + c] = shards[(r * rows + i) * local + c]: the gathered vocab-parallel logits
// ([tp][rows][local]) as full rows [rows, tp * local].
void assemble_vocab_shards(const float* shards, int64_t tp, int64_t rows, int64_t local, float* out,
                           cudaStream_t stream);

// One outcome per entry of `params` (n of them, device memory, as `penalties`): logits rows are
// [*, vocab]; `work` holds a vocab-wide f32 row for every params[i].work >= 0 (distinct).
void sample_rows(const float* logits, int64_t vocab, const SampleRowParams* params, int64_t n,
                 const PenaltyEntry* penalties, float* work, SampleRowOutcome* outcomes,
                 cudaStream_t stream);

// The engine's overlap (worker/engine/engine.h): a step launched before the previous one's
// tokens reached the host names them by placeholder. ids[i] < 0 becomes outcomes[-1 - ids[i]]
// .token, or 0 where that row did not sample (its sequence ends with the row's error and this
// row is dropped) or the index is outside [0, count); ids[i] >= 0 stay.
void fill_token_placeholders(int32_t* ids, int64_t rows, const SampleRowOutcome* outcomes,
                             int64_t count, cudaStream_t stream);

}  // namespace dsmath::cuda
