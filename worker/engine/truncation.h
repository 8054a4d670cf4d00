// Which tokens top_k and top_p keep, without sorting the vocabulary.
//
//   top_k: one pass keeping the k most likely tokens in a heap (a token displaces its root only
//          about k ln(V/k) times), then top_p within those k.
//   top_p: if the tokens within 2^-10 of the top one are few and hold the nucleus mass (a
//          trained model's peaked distribution), only they are sorted. Otherwise a radix
//          select: probabilities in (0, 1] order like their float bits, so the top 16 bits
//          put every token into one of 4,097 buckets (all below 2^-32 in the lowest); one
//          pass sums each bucket's mass, the walk from the top finds the bucket where the
//          nucleus mass is reached, and only that bucket's tokens are sorted.
// Tokens are ranked by probability, then by lower id for ties.
#pragma once

#include <cstdint>
#include <span>

namespace dsmath {

// The order tokens are ranked in: more probable first, then lower id (a fixed order for ties).
struct MoreLikely {
  std::span<const float> prob;
  bool operator()(int32_t a, int32_t b) const {
    return prob[size_t(a)] > prob[size_t(b)] || (prob[size_t(a)] == prob[size_t(b)] && a < b);
  }
};

// Token i is kept when prob[i] > prob or (prob[i] == prob and i <= token); token -1 keeps all.
struct TruncationCutoff {
  int32_t token = -1;
  float prob = 0;
  bool keeps(int32_t i, float p) const {
    return token < 0 || p > prob || (p == prob && i <= token);
  }
};

// `prob`: unnormalized probabilities in [0, 1] (the most likely token has 1), summing to
// `total`. top_k 0 and top_p 1 are off; with both, top_p measures mass within the top k (as
// vLLM does). top_p keeps the smallest set of most likely tokens whose mass reaches top_p
// (at least one token).
TruncationCutoff truncation_cutoff(std::span<const float> prob, double total, int64_t top_k,
                                   double top_p);

}  // namespace dsmath
