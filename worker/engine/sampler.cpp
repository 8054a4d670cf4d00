#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "common/core/error.h"
#include "kernels/cpu/sampling.h"
#include "worker/engine/rng.h"
#include "worker/engine/truncation.h"

namespace dsmath {

namespace {
// Below ~1e-5 the scaled logits overflow f32; such a temperature is greedy in effect (vLLM
// draws the same line).
constexpr double kGreedyBelowTemperature = 1e-5;
}  // namespace

bool SamplingParams::penalized() const {
  return repetition_penalty != 1.0 || presence_penalty != 0.0 || frequency_penalty != 0.0;
}

void SamplingParams::validate() const {
  DSMATH_CHECK(std::isfinite(temperature) && temperature >= 0,
               "temperature must be >= 0 (0 = greedy), got ", temperature);
  DSMATH_CHECK(top_k >= 0, "top_k must be >= 0 (0 = off), got ", top_k);
  DSMATH_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got ", top_p);
  DSMATH_CHECK(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got ", min_p);
  DSMATH_CHECK(std::isfinite(repetition_penalty) && repetition_penalty > 0,
               "repetition_penalty must be finite and > 0, got ", repetition_penalty);
  DSMATH_CHECK(std::isfinite(presence_penalty), "presence_penalty must be finite");
  DSMATH_CHECK(std::isfinite(frequency_penalty), "frequency_penalty must be finite");
  DSMATH_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", max_new_tokens);
  DSMATH_CHECK(top_logprobs >= 0 && top_logprobs <= 20, "top_logprobs must be in [0, 20], got ",
               top_logprobs);
}

std::string non_finite_logit_message(float value, size_t token) {
  return cat("the model produced a non-finite logit (", value, " for token ", token,
             "); the sequence cannot be continued");
}

void apply_penalties(std::vector<float>& z, const SamplingParams& p,
                     std::span<const int32_t> history, size_t prompt_len) {
  if (p.repetition_penalty != 1.0) {
    std::vector<bool> seen(z.size(), false);
    for (int32_t t : history) {
      if (t < 0 || size_t(t) >= z.size() || seen[size_t(t)]) continue;
      seen[size_t(t)] = true;
      float& v = z[size_t(t)];
      v = v > 0 ? float(v / p.repetition_penalty) : float(v * p.repetition_penalty);
    }
  }
  if (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, int> counts;
    for (size_t i = prompt_len; i < history.size(); ++i) ++counts[history[i]];
    for (auto [t, n] : counts) {
      if (t < 0 || size_t(t) >= z.size()) continue;
      z[size_t(t)] -= float(p.frequency_penalty * n + p.presence_penalty);
    }
  }
}

bool SamplingParams::greedy() const {
  return temperature < kGreedyBelowTemperature;
}

namespace {

// Reused per thread: no vocabulary-sized allocation per token.
struct Scratch {
  std::vector<float> penalized, prob, masked;
  std::vector<int32_t> candidates;
};
thread_local Scratch scratch;

// Index of the first maximum (as torch.argmax); throws on a NaN or infinite logit.
size_t checked_argmax(std::span<const float> z) {
  const cpu::RowArgmax best = cpu::argmax_finite(z.data(), int64_t(z.size()));
  if (!best.finite) {
    const size_t bad = size_t(
        std::find_if(z.begin(), z.end(), [](float v) { return !std::isfinite(v); }) - z.begin());
    fail(non_finite_logit_message(z[bad], bad));
  }
  return size_t(best.index);
}

// Draws from softmax(z / T) restricted by top_k, top_p and min_p, with uniform u in [0, 1).
// The kept tokens are those at least as likely as a cutoff token (truncation.h) and, for
// min_p, at least min_p times as likely as the top one; the draw walks them in id order.
int32_t draw(std::span<const float> z, float zmax, const SamplingParams& p, double u,
             double* total_out) {
  const int64_t n = int64_t(z.size());
  std::vector<float>& prob = scratch.prob;
  prob.resize(z.size());
  const double total = cpu::exp_shifted(z.data(), n, zmax, float(1.0 / p.temperature), prob.data());
  *total_out = total;
  const TruncationCutoff cut = truncation_cutoff(prob, total, p.top_k, p.top_p);
  // masked: the kept tokens' probabilities (min_p against the top token's 1), 0 elsewhere.
  std::vector<float>& masked = scratch.masked;
  masked.resize(z.size());
  const double target =
      u * cpu::mask_kept(prob.data(), n, float(p.min_p), cut.token < 0 ? -1.0f : cut.prob,
                         cut.token, masked.data());
  // Walk blocks of 256 by their sums, then the block where the target falls.
  constexpr int64_t kBlock = 256;
  double cum = 0;
  int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    float lanes[8] = {};
    for (int64_t i = b; i < b + kBlock; i += 8)
      for (int64_t j = 0; j < 8; ++j) lanes[j] += masked[size_t(i + j)];
    double sum = 0;
    for (float l : lanes) sum += l;
    if (target < cum + sum) break;
    cum += sum;
  }
  int32_t last_kept = -1;
  for (int64_t i = b; i < n; ++i) {
    if (masked[size_t(i)] == 0.0f) continue;
    last_kept = int32_t(i);
    if (target < (cum += masked[size_t(i)])) return int32_t(i);
  }
  if (last_kept >= 0) return last_kept;  // rounding left the target past the end
  for (int64_t i = n; i-- > 0;)
    if (masked[size_t(i)] != 0.0f) return int32_t(i);
  return int32_t(checked_argmax(z));
}

}  // namespace

SampledToken sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> history, size_t prompt_len,
                          const SampleKey& key) {
  DSMATH_CHECK(!logits.empty(), "sample_token: empty logits");
  const size_t raw_argmax = checked_argmax(logits);
  const bool penalized = params.penalized();
  std::span<const float> z = logits;
  size_t z_argmax = raw_argmax;
  if (penalized) {
    scratch.penalized.assign(logits.begin(), logits.end());
    apply_penalties(scratch.penalized, params, history, prompt_len);
    z = scratch.penalized;
    z_argmax = checked_argmax(z);
  }

  SampledToken out;
  double sampled_total = 0;  // sum of exp(z - zmax) when the draw computed it at T = 1
  if (params.greedy()) {
    out.token = int32_t(z_argmax);
  } else {
    const double u = philox_uniform(params.seed, key.stream, key.sample_index, key.step);
    out.token = draw(z, z[z_argmax], params, u, &sampled_total);
  }
  if (!params.logprobs && params.top_logprobs == 0) return out;

  // log_softmax of the raw logits: the model's own probability of each token. The draw's exp
  // pass is that sum already when nothing transformed the logits.
  const float lmax = logits[raw_argmax];
  double sum = sampled_total;
  if (penalized || params.greedy() || params.temperature != 1.0) {
    scratch.prob.resize(logits.size());
    sum = cpu::exp_shifted(logits.data(), int64_t(logits.size()), lmax, 1.0f, scratch.prob.data());
  }
  const double log_z = double(lmax) + std::log(sum);
  out.logprob = float(double(logits[size_t(out.token)]) - log_z);

  if (params.top_logprobs > 0) {
    std::vector<int32_t>& idx = scratch.candidates;
    idx.resize(logits.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = int32_t(i);
    const size_t k = std::min(idx.size(), size_t(params.top_logprobs));
    std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(), MoreLikely{logits});
    for (size_t i = 0; i < k; ++i)
      out.top.push_back({idx[i], float(double(logits[size_t(idx[i])]) - log_z)});
  }
  return out;
}

}  // namespace dsmath
