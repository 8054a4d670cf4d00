#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "common/core/error.h"
#include "worker/engine/rng.h"

namespace dsmath {

namespace {
// Below ~1e-5 the scaled logits overflow f32; such a temperature is greedy in effect (vLLM
// draws the same line).
constexpr double kGreedyBelowTemperature = 1e-5;
}  // namespace

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

bool SamplingParams::greedy() const {
  return temperature < kGreedyBelowTemperature;
}

namespace {

// Reused per thread: no vocabulary-sized allocation per token.
struct Scratch {
  std::vector<float> penalized, prob;
  std::vector<int32_t> candidates;
};
thread_local Scratch scratch;

bool has_penalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
}

// Penalties act on the raw logits, before temperature (as HF and vLLM apply them).
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

// Index of the first maximum (as torch.argmax); throws on a NaN or infinite logit.
size_t checked_argmax(std::span<const float> z) {
  size_t best = 0;
  bool finite = true;
  for (size_t i = 0; i < z.size(); ++i) {
    finite &= std::isfinite(z[i]);
    if (z[i] > z[best]) best = i;
  }
  if (!finite) {
    const size_t bad = size_t(std::find_if(z.begin(), z.end(), [](float v) {
                                return !std::isfinite(v);
                              }) -
                              z.begin());
    fail("the model produced a non-finite logit (", z[bad], " for token ", bad,
         "); the sequence cannot be continued");
  }
  return best;
}

// Better candidate first: higher probability, then lower id (a fixed order for ties).
struct MoreLikely {
  const float* p;
  bool operator()(int32_t a, int32_t b) const {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
  }
};

// The candidates that top_k / top_p / min_p may keep, sorted most likely first, and the mass
// top_p is measured against. prob[] holds exp((z - zmax) / T), so the most likely token has 1.
double sorted_candidates(const std::vector<float>& prob, double total, const SamplingParams& p,
                         std::vector<int32_t>& cand) {
  const int32_t vocab = int32_t(prob.size());
  cand.clear();
  if (p.top_k > 0 && p.top_k < vocab) {
    cand.resize(size_t(vocab));
    for (int32_t i = 0; i < vocab; ++i) cand[size_t(i)] = i;
    std::nth_element(cand.begin(), cand.begin() + p.top_k, cand.end(), MoreLikely{prob.data()});
    cand.resize(size_t(p.top_k));
    total = 0;  // top_p then measures within the top k (renormalized), as vLLM does
    for (int32_t i : cand) total += prob[size_t(i)];
  } else {
    // Only tokens above a threshold can be kept: min_p gives one outright; for top_p, lower it
    // until the tokens above it hold the nucleus mass.
    const double need = p.top_p < 1.0 ? p.top_p * total : 0.0;
    float threshold = p.min_p > 0 ? float(p.min_p) : 1.0f / 1024;
    for (;;) {
      cand.clear();
      double mass = 0;
      for (int32_t i = 0; i < vocab; ++i)
        if (prob[size_t(i)] >= threshold) {
          cand.push_back(i);
          mass += prob[size_t(i)];
        }
      if (p.min_p > 0 || mass >= need || threshold == 0.0f) break;
      threshold = threshold < 1e-30f ? 0.0f : threshold / 64;
    }
  }
  std::sort(cand.begin(), cand.end(), MoreLikely{prob.data()});
  return total;
}

// Draws from softmax(z / T) restricted by top_k, top_p and min_p, with uniform u in [0, 1).
int32_t draw(std::span<const float> z, float zmax, const SamplingParams& p, double u,
             double* total_out) {
  std::vector<float>& prob = scratch.prob;
  prob.resize(z.size());
  const float inv_t = float(1.0 / p.temperature);
  double total = 0;
  for (size_t i = 0; i < z.size(); ++i) total += prob[i] = std::exp((z[i] - zmax) * inv_t);
  *total_out = total;

  const bool filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
  if (!filtered) {  // the whole vocabulary, in id order
    const double target = u * total;
    double cum = 0;
    for (size_t i = 0; i < prob.size(); ++i)
      if (target < (cum += prob[i])) return int32_t(i);
    return int32_t(checked_argmax(z));  // rounding left target at the very end
  }

  std::vector<int32_t>& cand = scratch.candidates;
  const double nucleus_total = sorted_candidates(prob, total, p, cand);
  size_t keep = cand.size();
  if (p.top_p < 1.0) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    for (size_t i = 0; i < keep; ++i) {
      if (cum >= p.top_p * nucleus_total) {
        keep = i;
        break;
      }
      cum += prob[size_t(cand[i])];
    }
  }
  if (p.min_p > 0.0) {  // drop tokens less likely than min_p x the most likely one
    const double floor = p.min_p * prob[size_t(cand[0])];
    size_t i = 1;
    while (i < keep && prob[size_t(cand[i])] >= floor) ++i;
    keep = i;
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += prob[size_t(cand[i])];
  const double target = u * mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i)
    if (target < (cum += prob[size_t(cand[i])])) return cand[i];
  return cand[keep - 1];
}

}  // namespace

SampledToken sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> history, size_t prompt_len,
                          const SampleKey& key) {
  DSMATH_CHECK(!logits.empty(), "sample_token: empty logits");
  const size_t raw_argmax = checked_argmax(logits);
  const bool penalized = has_penalties(params);
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
    sum = 0;
    for (float v : logits) sum += std::exp(v - lmax);
  }
  const double log_z = double(lmax) + std::log(sum);
  out.logprob = float(double(logits[size_t(out.token)]) - log_z);

  if (params.top_logprobs > 0) {
    std::vector<int32_t>& idx = scratch.candidates;
    idx.resize(logits.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = int32_t(i);
    const size_t k = std::min(idx.size(), size_t(params.top_logprobs));
    std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(),
                      MoreLikely{logits.data()});
    for (size_t i = 0; i < k; ++i)
      out.top.push_back({idx[i], float(double(logits[size_t(idx[i])]) - log_z)});
  }
  return out;
}

}  // namespace dsmath
