#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "common/core/error.h"
#include "worker/engine/rng.h"

namespace dsmath {

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
  for (const std::string& s : stop) DSMATH_CHECK(!s.empty(), "stop strings must not be empty");
}

namespace {

constexpr double kGreedyBelowTemperature = 1e-5;

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

int32_t argmax(const std::vector<float>& z) {
  return int32_t(std::max_element(z.begin(), z.end()) - z.begin());  // first max, as torch
}

// Draws from softmax(z / T) restricted by top_k, top_p and min_p.
int32_t draw(std::vector<float>& z, const SamplingParams& p, double u) {
  const float inv_t = float(1.0 / p.temperature);
  for (float& v : z) v *= inv_t;

  std::vector<int32_t> cand(z.size());
  std::iota(cand.begin(), cand.end(), 0);
  const bool filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0;
  if (filtered) {
    auto better = [&](int32_t a, int32_t b) {
      return z[size_t(a)] > z[size_t(b)] || (z[size_t(a)] == z[size_t(b)] && a < b);
    };
    if (p.top_k > 0 && size_t(p.top_k) < cand.size()) {
      std::nth_element(cand.begin(), cand.begin() + p.top_k, cand.end(), better);
      cand.resize(size_t(p.top_k));
    }
    std::sort(cand.begin(), cand.end(), better);
  }

  const float zmax = *std::max_element(z.begin(), z.end());
  std::vector<double> prob(cand.size());
  double total = 0;
  for (size_t i = 0; i < cand.size(); ++i)
    total += prob[i] = std::exp(double(z[size_t(cand[i])] - zmax));

  size_t keep = cand.size();
  if (p.top_p < 1.0) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    for (size_t i = 0; i < keep; ++i) {
      if (cum >= p.top_p * total) {
        keep = i;
        break;
      }
      cum += prob[i];
    }
  }
  if (p.min_p > 0.0) {  // drop tokens less likely than min_p x the most likely one
    const double floor = p.min_p * prob[0];
    size_t i = 1;
    while (i < keep && prob[i] >= floor) ++i;
    keep = i;
  }

  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += prob[i];
  const double target = u * mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += prob[i];
    if (target < cum) return cand[i];
  }
  return cand[keep - 1];
}

}  // namespace

SampledToken sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> history, size_t prompt_len,
                          uint64_t sample_index, uint64_t step) {
  DSMATH_CHECK(!logits.empty(), "sample_token: empty logits");
  std::vector<float> z(logits.begin(), logits.end());
  apply_penalties(z, params, history, prompt_len);
  // Below ~1e-5 the scaled logits overflow f32; such a temperature is greedy in effect (vLLM
  // draws the same line).
  const int32_t chosen = params.temperature < kGreedyBelowTemperature
                             ? argmax(z)
                             : draw(z, params, philox_uniform(params.seed, sample_index, step));

  // log_softmax of the raw logits: the model's own probability of each token.
  const float lmax = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v - lmax));
  const double log_z = double(lmax) + std::log(sum);
  SampledToken out{chosen, float(double(logits[size_t(chosen)]) - log_z), {}};

  if (params.top_logprobs > 0) {
    std::vector<int32_t> idx(logits.size());
    std::iota(idx.begin(), idx.end(), 0);
    const size_t k = std::min(idx.size(), size_t(params.top_logprobs));
    std::partial_sort(idx.begin(), idx.begin() + ptrdiff_t(k), idx.end(),
                      [&](int32_t a, int32_t b) {
                        return logits[size_t(a)] > logits[size_t(b)] ||
                               (logits[size_t(a)] == logits[size_t(b)] && a < b);
                      });
    for (size_t i = 0; i < k; ++i)
      out.top.push_back({idx[i], float(double(logits[size_t(idx[i])]) - log_z)});
  }
  return out;
}

}  // namespace dsmath
