#include "worker/engine/truncation.h"

#include <algorithm>
#include <array>
#include <bit>
#include <vector>

namespace dsmath {

namespace {

// Bucket keys are the top 16 bits of the float (exponent and 7 mantissa bits). Probabilities
// below 2^-32 of the top one share bucket 0: however many they are, they hold too little mass to
// matter to the rest, and inside a bucket the ranking is exact anyway.
constexpr int kFloorKey = 95 << 7;                // the key of 2^-32
constexpr int kBuckets = 0x3F80 - kFloorKey + 1;  // up to the key of 1.0

int bucket_of(float p) {
  return std::max(0, int(std::bit_cast<uint32_t>(p) >> 16) - kFloorKey);
}

// Two interleaved halves (even and odd tokens) so that runs of tokens in one bucket do not
// wait on each other's read-modify-write.
struct Histogram {
  std::array<float, kBuckets> mass, mass2;
  std::array<int32_t, kBuckets> count, count2;
  std::vector<int32_t> members;  // of the boundary bucket, most likely first
};
thread_local Histogram hist;

// The tokens of bucket b, most likely first.
void sorted_bucket(std::span<const float> prob, int b, std::vector<int32_t>& out) {
  out.clear();
  for (size_t i = 0; i < prob.size(); ++i)
    if (bucket_of(prob[i]) == b) out.push_back(int32_t(i));
  std::sort(out.begin(), out.end(), [&](int32_t x, int32_t y) {
    return prob[size_t(x)] > prob[size_t(y)] || (prob[size_t(x)] == prob[size_t(y)] && x < y);
  });
}

// The fast path for a peaked distribution (what a trained model usually gives): when the tokens
// within 2^-10 of the top one are few and already hold what top_k / top_p keep, only they are
// ranked, exactly as sorting the whole vocabulary would. Returns false when they are not enough.
bool cutoff_among_likely(std::span<const float> prob, double total, bool use_k, int64_t top_k,
                         bool use_p, double top_p, TruncationCutoff& cut) {
  constexpr float kBar = 1.0f / 1024;
  constexpr size_t kMaxCandidates = 2048;
  std::vector<int32_t>& cand = hist.members;
  cand.clear();
  double mass = 0;
  for (size_t i = 0; i < prob.size(); ++i)
    if (prob[i] >= kBar) {
      if (cand.size() == kMaxCandidates) return false;
      cand.push_back(int32_t(i));
      mass += prob[i];
    }
  const bool enough_for_k = !use_k || int64_t(cand.size()) >= top_k;
  const bool enough_for_p = !use_p || use_k || mass >= top_p * total;
  if (!enough_for_k || !enough_for_p) return false;
  std::sort(cand.begin(), cand.end(), [&](int32_t x, int32_t y) {
    return prob[size_t(x)] > prob[size_t(y)] || (prob[size_t(x)] == prob[size_t(y)] && x < y);
  });
  size_t keep = cand.size();
  double kept_mass = total;
  if (use_k) {
    keep = size_t(top_k);
    kept_mass = 0;
    for (size_t i = 0; i < keep; ++i) kept_mass += prob[size_t(cand[i])];
  }
  if (use_p) {  // the smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    for (size_t i = 0; i < keep; ++i) {
      if (cum >= top_p * kept_mass) {
        keep = i;
        break;
      }
      cum += prob[size_t(cand[i])];
    }
  }
  cut = {cand[keep - 1], prob[size_t(cand[keep - 1])]};
  return true;
}

}  // namespace

TruncationCutoff truncation_cutoff(std::span<const float> prob, double total, int64_t top_k,
                                   double top_p) {
  const bool use_k = top_k > 0 && size_t(top_k) < prob.size();
  const bool use_p = top_p < 1.0;
  if (!use_k && !use_p) return {};
  TruncationCutoff fast;
  if (cutoff_among_likely(prob, total, use_k, top_k, use_p, top_p, fast)) return fast;
  hist.mass.fill(0);
  hist.mass2.fill(0);
  hist.count.fill(0);
  hist.count2.fill(0);
  size_t i = 0;
  for (; i + 2 <= prob.size(); i += 2) {
    const int a = bucket_of(prob[i]), b = bucket_of(prob[i + 1]);
    hist.mass[size_t(a)] += prob[i];
    ++hist.count[size_t(a)];
    hist.mass2[size_t(b)] += prob[i + 1];
    ++hist.count2[size_t(b)];
  }
  if (i < prob.size()) {
    hist.mass[size_t(bucket_of(prob[i]))] += prob[i];
    ++hist.count[size_t(bucket_of(prob[i]))];
  }
  for (size_t b = 0; b < size_t(kBuckets); ++b) {
    hist.mass[b] += hist.mass2[b];
    hist.count[b] += hist.count2[b];
  }

  TruncationCutoff cut;
  int k_bucket = -1;  // with top_k: buckets above are kept whole, this one as hist.members
  double kept_mass = total;
  if (use_k) {
    int64_t above = 0;
    double mass_above = 0;  // bucket sums are floats, accumulated here in double
    int b = kBuckets - 1;
    for (; b > 0 && above + hist.count[size_t(b)] < top_k; --b) {
      above += hist.count[size_t(b)];
      mass_above += hist.mass[size_t(b)];
    }
    k_bucket = b;
    sorted_bucket(prob, b, hist.members);
    hist.members.resize(size_t(top_k - above));
    kept_mass = mass_above;
    for (int32_t t : hist.members) kept_mass += prob[size_t(t)];
    cut = {hist.members.back(), prob[size_t(hist.members.back())]};
  }
  if (!use_p) return cut;

  const double need = top_p * kept_mass;
  double cum = 0;
  int b = kBuckets - 1;
  for (; b >= std::max(k_bucket, 0); --b) {
    double m = hist.mass[size_t(b)];
    if (b == k_bucket) {
      m = 0;
      for (int32_t t : hist.members) m += prob[size_t(t)];
    }
    if (cum + m >= need) break;
    cum += m;
  }
  if (b < std::max(k_bucket, 0)) return cut;  // rounding: the whole kept set
  if (b != k_bucket) sorted_bucket(prob, b, hist.members);
  int32_t last = -1;
  for (int32_t t : hist.members) {
    if (last >= 0 && cum >= need) break;
    cum += prob[size_t(t)];
    last = t;
  }
  return {last, prob[size_t(last)]};
}

}  // namespace dsmath
