#include "worker/engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <unordered_map>

#include "common/core/error.h"
#include "worker/engine/rng.h"
#include "worker/engine/truncation.h"

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
  std::vector<float> penalized, prob, masked;
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
// The vocabulary-wide passes are compiled for AVX-512, AVX2 and plain x86-64, and the loader
// picks the widest this CPU has (GCC function multiversioning).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define DSMATH_WIDEST_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define DSMATH_WIDEST_SIMD
#endif

// The index of the first maximum of z (as torch.argmax), and whether every value is finite
// (v - v is 0 exactly for finite v). Sixteen lanes, each keeping its first maximum, so the
// loop vectorizes; the first maximum overall is the lowest index among the best lanes.
DSMATH_WIDEST_SIMD size_t finite_argmax(const float* z, size_t n, bool* finite) {
  constexpr size_t kLanes = 16;
  float top[kLanes], bad[kLanes];
  int32_t at[kLanes];
  for (size_t j = 0; j < kLanes; ++j) top[j] = z[0], at[j] = 0, bad[j] = 0.0f;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (size_t j = 0; j < kLanes; ++j) {
      const float v = z[i + j];
      const bool better = v > top[j];
      top[j] = better ? v : top[j];
      at[j] = better ? int32_t(i + j) : at[j];
      bad[j] += v - v;  // NaN once any value is NaN or infinite
    }
  size_t best = size_t(at[0]);
  float b = 0.0f;
  for (size_t j = 0; j < kLanes; ++j) {
    b += bad[j];
    if (top[j] > z[best] || (top[j] == z[best] && size_t(at[j]) < best)) best = size_t(at[j]);
  }
  for (; i < n; ++i) {
    b += z[i] - z[i];
    if (z[i] > z[best]) best = i;
  }
  *finite = b == 0.0f;
  return best;
}

// Index of the first maximum; throws on a NaN or infinite logit.
size_t checked_argmax(std::span<const float> z) {
  bool finite = true;
  const size_t best = finite_argmax(z.data(), z.size(), &finite);
  if (!finite) {
    const size_t bad = size_t(
        std::find_if(z.begin(), z.end(), [](float v) { return !std::isfinite(v); }) - z.begin());
    fail("the model produced a non-finite logit (", z[bad], " for token ", bad,
         "); the sequence cannot be continued");
  }
  return best;
}

// e^x for x <= 0, to ~2e-7 relative, in plain arithmetic the compiler vectorizes (libm's expf
// is a call per element; this file is built with -fno-trapping-math so that the clamp and the
// selections below become vector blends). x = n ln2 + g with integer n and |g| <= ln2 / 2; e^g by
// its Taylor series to degree 6 (error below 1.2e-7); 2^n goes into the exponent bits. Below -86
// the result is clamped near 4e-38: a probability that small next to the top token's 1 is 0.
inline float exp_nonpositive(float x) {
  x = std::max(x, -86.0f);
  const float t = x * 1.44269504089f;
  const float rounded = t + 12582912.0f;  // 1.5 * 2^23: rounds t to the nearest integer
  const float n = rounded - 12582912.0f;
  const float g = (t - n) * 0.69314718056f;
  const float p =
      1.0f + g * (1.0f + g * (0.5f + g * (1.0f / 6 +
                                          g * (1.0f / 24 + g * (1.0f / 120 + g * (1.0f / 720))))));
  const int32_t exponent = std::bit_cast<int32_t>(rounded) - 0x4B400000;  // n as an integer
  return std::bit_cast<float>(std::bit_cast<int32_t>(p) + exponent * (1 << 23));
}

// Sum of v in a fixed order: eight float partial sums (so the loop vectorizes), then doubles.
inline double lane_sum(const std::vector<float>& v) {
  float lanes[8] = {};
  size_t i = 0;
  for (; i + 8 <= v.size(); i += 8)
    for (size_t j = 0; j < 8; ++j) lanes[j] += v[i + j];
  double total = 0;
  for (float l : lanes) total += l;
  for (; i < v.size(); ++i) total += v[i];
  return total;
}

// prob[i] = exp((z[i] - zmax) * inv_t); returns their sum.
DSMATH_WIDEST_SIMD double exp_pass(std::span<const float> z, float zmax, float inv_t,
                                   std::vector<float>& prob) {
  prob.resize(z.size());
  const float* in = z.data();
  float* out = prob.data();
  for (size_t i = 0; i < z.size(); ++i) out[i] = exp_nonpositive((in[i] - zmax) * inv_t);
  return lane_sum(prob);
}

// masked[i] = prob[i] where token i is kept (at least min_p times as likely as the top token,
// whose prob is 1, and within the cutoff), else 0; returns the kept mass. Branch-free, so it
// vectorizes.
DSMATH_WIDEST_SIMD double mask_kept(const std::vector<float>& prob, float min_p,
                                    const TruncationCutoff& cut, std::vector<float>& masked) {
  const float cut_prob = cut.token < 0 ? -1.0f : cut.prob;
  const int32_t cut_token = cut.token, n = int32_t(prob.size());
  masked.resize(prob.size());
  const float* in = prob.data();
  float* out = masked.data();
  for (int32_t i = 0; i < n; ++i) {
    const float q = in[i];
    const bool keep = q >= min_p && (q > cut_prob || (q == cut_prob && i <= cut_token));
    out[i] = keep ? q : 0.0f;
  }
  return lane_sum(masked);
}

// Better candidate first: higher probability, then lower id (a fixed order for ties).
struct MoreLikely {
  const float* p;
  bool operator()(int32_t a, int32_t b) const { return p[a] > p[b] || (p[a] == p[b] && a < b); }
};

// Draws from softmax(z / T) restricted by top_k, top_p and min_p, with uniform u in [0, 1).
// The kept tokens are those at least as likely as a cutoff token (truncation.h) and, for
// min_p, at least min_p times as likely as the top one; the draw walks them in id order.
int32_t draw(std::span<const float> z, float zmax, const SamplingParams& p, double u,
             double* total_out) {
  std::vector<float>& prob = scratch.prob;
  const double total = exp_pass(z, zmax, float(1.0 / p.temperature), prob);
  *total_out = total;
  const TruncationCutoff cut = truncation_cutoff(prob, total, p.top_k, p.top_p);

  std::vector<float>& masked = scratch.masked;
  const double target = u * mask_kept(prob, float(p.min_p), cut, masked);
  // Walk blocks of 256 by their sums, then the block where the target falls.
  const size_t n = masked.size(), block = 256;
  double cum = 0;
  size_t b = 0;
  for (; b + block <= n; b += block) {
    float sum = 0;
    for (size_t i = b; i < b + block; ++i) sum += masked[i];
    if (target < cum + sum) break;
    cum += sum;
  }
  int32_t last_kept = -1;
  for (size_t i = b; i < n; ++i) {
    if (masked[i] == 0.0f) continue;
    last_kept = int32_t(i);
    if (target < (cum += masked[i])) return int32_t(i);
  }
  if (last_kept >= 0) return last_kept;  // rounding left the target past the end
  for (size_t i = n; i-- > 0;)
    if (masked[i] != 0.0f) return int32_t(i);
  return 0;
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
