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
    const size_t bad = size_t(
        std::find_if(z.begin(), z.end(), [](float v) { return !std::isfinite(v); }) - z.begin());
    fail("the model produced a non-finite logit (", z[bad], " for token ", bad,
         "); the sequence cannot be continued");
  }
  return best;
}

// Better candidate first: higher probability, then lower id (a fixed order for ties).
struct MoreLikely {
  const float* p;
  bool operator()(int32_t a, int32_t b) const { return p[a] > p[b] || (p[a] == p[b] && a < b); }
};

// Reorders cand[0, n) so that its first `keep` entries are the most likely ones whose mass
// first reaches `need` (top_p's nucleus), and returns keep. A bisection with nth_element:
// O(n) expected, no sort.
size_t nucleus(std::vector<int32_t>& cand, size_t n, const std::vector<float>& prob, double need) {
  size_t lo = 0, hi = n;  // mass of cand[0, lo) < need <= mass of cand[0, hi)
  double mass_before_lo = 0;
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(cand.begin() + ptrdiff_t(lo), cand.begin() + ptrdiff_t(mid),
                     cand.begin() + ptrdiff_t(hi), MoreLikely{prob.data()});
    double mass = 0;
    for (size_t i = lo; i < mid; ++i) mass += prob[size_t(cand[i])];
    if (mass_before_lo + mass >= need) {
      hi = mid;
    } else {
      mass_before_lo += mass;
      lo = mid;
    }
  }
  return std::min(n, lo + 1);
}

// Draws from softmax(z / T) restricted by top_k, top_p and min_p, with uniform u in [0, 1).
// The kept tokens are those at least as likely as a cutoff token; the draw walks them in id
// order, so nothing is sorted.
int32_t draw(std::span<const float> z, float zmax, const SamplingParams& p, double u,
             double* total_out) {
  std::vector<float>& prob = scratch.prob;
  prob.resize(z.size());
  const float inv_t = float(1.0 / p.temperature);
  double total = 0;
  for (size_t i = 0; i < z.size(); ++i) total += prob[i] = std::exp((z[i] - zmax) * inv_t);
  *total_out = total;

  const MoreLikely more_likely{prob.data()};
  const size_t vocab = prob.size();
  int32_t cutoff = -1;  // the least likely token kept by top_k / top_p; -1: no such limit
  if (p.top_k > 0 || p.top_p < 1.0) {
    std::vector<int32_t>& cand = scratch.candidates;
    cand.resize(vocab);
    for (size_t i = 0; i < vocab; ++i) cand[i] = int32_t(i);
    size_t n = vocab;
    double mass = total;
    if (p.top_k > 0 && size_t(p.top_k) < vocab) {
      n = size_t(p.top_k);
      std::nth_element(cand.begin(), cand.begin() + ptrdiff_t(n - 1), cand.end(), more_likely);
      mass = 0;  // top_p then measures within the top k (renormalized), as vLLM does
      for (size_t i = 0; i < n; ++i) mass += prob[size_t(cand[i])];
    }
    if (p.top_p < 1.0) n = nucleus(cand, n, prob, p.top_p * mass);
    cutoff = *std::min_element(cand.begin(), cand.begin() + ptrdiff_t(n),
                               [&](int32_t a, int32_t b) { return more_likely(b, a); });
  }
  // min_p: drop tokens less likely than min_p x the most likely one (whose prob is 1).
  const float floor = float(p.min_p);
  auto kept = [&](size_t i) {
    return (cutoff < 0 || !more_likely(cutoff, int32_t(i))) && prob[i] >= floor;
  };
  double kept_mass = 0;
  int32_t last_kept = -1;
  for (size_t i = 0; i < vocab; ++i)
    if (kept(i)) {
      kept_mass += prob[i];
      last_kept = int32_t(i);
    }
  const double target = u * kept_mass;
  double cum = 0;
  for (size_t i = 0; i < vocab; ++i)
    if (kept(i) && target < (cum += prob[i])) return int32_t(i);
  return last_kept;  // rounding left the target at the very end
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
