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
struct Scratch {
  std::array<float, kBuckets> mass, mass2;
  std::vector<int32_t> tokens;  // candidates, or the boundary bucket's tokens
};
thread_local Scratch scratch;

// The last token kept by top_p over `sorted` (most likely first), whose mass before them is
// `cum`: the smallest prefix whose mass reaches `need` (at least one token).
TruncationCutoff walk_to(std::span<const float> prob, const std::vector<int32_t>& sorted,
                         double cum, double need) {
  int32_t last = -1;
  for (int32_t t : sorted) {
    if (last >= 0 && cum >= need) break;
    cum += prob[size_t(t)];
    last = t;
  }
  return {last, prob[size_t(last)]};
}

// top_k (then top_p within the k): one pass keeping the k most likely tokens in a heap whose
// root is the least likely of them; in random order a token replaces it only ~k ln(V/k) times.
TruncationCutoff top_k_cutoff(std::span<const float> prob, int64_t top_k, double top_p) {
  const MoreLikely more_likely{prob};
  std::vector<int32_t>& heap = scratch.tokens;  // the root is the worst of the k
  heap.clear();
  for (int32_t i = 0; i < int32_t(top_k); ++i) heap.push_back(i);
  std::make_heap(heap.begin(), heap.end(), more_likely);
  for (size_t i = size_t(top_k); i < prob.size(); ++i) {
    if (prob[i] < prob[size_t(heap.front())] || !more_likely(int32_t(i), heap.front())) continue;
    std::pop_heap(heap.begin(), heap.end(), more_likely);
    heap.back() = int32_t(i);
    std::push_heap(heap.begin(), heap.end(), more_likely);
  }
  std::sort(heap.begin(), heap.end(), more_likely);
  if (top_p >= 1.0) return {heap.back(), prob[size_t(heap.back())]};
  double mass = 0;
  for (int32_t t : heap) mass += prob[size_t(t)];
  return walk_to(prob, heap, 0, top_p * mass);
}

// top_p's fast path: when the tokens at least 2^-10 times as likely as the top one are few and
// already hold the nucleus mass (a trained model's peaked distribution usually does), only they
// are ranked. Returns false when they are too many or not enough.
bool nucleus_among_likely(std::span<const float> prob, double need, TruncationCutoff& cut) {
  constexpr float kBar = 1.0f / 1024;
  constexpr size_t kMaxCandidates = 2048;
  std::vector<int32_t>& cand = scratch.tokens;
  cand.clear();
  double mass = 0;
  for (size_t i = 0; i < prob.size(); ++i)
    if (prob[i] >= kBar) {
      if (cand.size() == kMaxCandidates) return false;
      cand.push_back(int32_t(i));
      mass += prob[i];
    }
  if (mass < need) return false;
  std::sort(cand.begin(), cand.end(), MoreLikely{prob});
  cut = walk_to(prob, cand, 0, need);
  return true;
}

// top_p by radix select: bucket masses from the top down to the bucket where the nucleus mass
// is reached, then that bucket's tokens in order.
TruncationCutoff nucleus_by_histogram(std::span<const float> prob, double need) {
  scratch.mass.fill(0);
  scratch.mass2.fill(0);
  size_t i = 0;
  for (; i + 2 <= prob.size(); i += 2) {
    scratch.mass[size_t(bucket_of(prob[i]))] += prob[i];
    scratch.mass2[size_t(bucket_of(prob[i + 1]))] += prob[i + 1];
  }
  if (i < prob.size()) scratch.mass[size_t(bucket_of(prob[i]))] += prob[i];
  double cum = 0;
  int b = kBuckets - 1;
  for (; b >= 0; --b) {
    const double m = double(scratch.mass[size_t(b)]) + scratch.mass2[size_t(b)];
    if (cum + m >= need) break;
    cum += m;
  }
  if (b < 0) return {};  // rounding: the whole vocabulary
  std::vector<int32_t>& members = scratch.tokens;
  members.clear();
  for (size_t t = 0; t < prob.size(); ++t)
    if (bucket_of(prob[t]) == b) members.push_back(int32_t(t));
  std::sort(members.begin(), members.end(), MoreLikely{prob});
  return walk_to(prob, members, cum, need);
}

}  // namespace

TruncationCutoff truncation_cutoff(std::span<const float> prob, double total, int64_t top_k,
                                   double top_p) {
  if (top_k > 0 && size_t(top_k) < prob.size()) return top_k_cutoff(prob, top_k, top_p);
  if (top_p >= 1.0) return {};
  TruncationCutoff cut;
  if (nucleus_among_likely(prob, top_p * total, cut)) return cut;
  return nucleus_by_histogram(prob, top_p * total);
}

}  // namespace dsmath
