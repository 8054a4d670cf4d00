#include "worker/engine/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "common/core/error.h"
#include "worker/engine/rng.h"
#include "worker/engine/truncation.h"

namespace dsmath {
namespace {

std::vector<float> log_probs(std::vector<double> p) {
  std::vector<float> z;
  for (double v : p) z.push_back(float(std::log(v)));
  return z;
}

std::map<int32_t, int> histogram(const std::vector<float>& logits, const SamplingParams& p, int n) {
  std::map<int32_t, int> h;
  for (int step = 0; step < n; ++step)
    ++h[sample_token(logits, p, {}, 0, {0, 0, uint64_t(step)}).token];
  return h;
}

TEST(Philox, UniformAndKeyedByAllFourInputs) {
  double sum = 0;
  for (uint64_t i = 0; i < 100000; ++i) {
    const double u = philox_uniform(7, 0, 0, i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);  // 5 standard errors
  EXPECT_EQ(philox_uniform(1, 9, 2, 3), philox_uniform(1, 9, 2, 3));
  EXPECT_NE(philox_uniform(1, 9, 2, 3), philox_uniform(2, 9, 2, 3));
  EXPECT_NE(philox_uniform(1, 9, 2, 3), philox_uniform(1, 8, 2, 3));
  EXPECT_NE(philox_uniform(1, 9, 2, 3), philox_uniform(1, 9, 3, 3));
  EXPECT_NE(philox_uniform(1, 9, 2, 3), philox_uniform(1, 9, 2, 4));
}

TEST(Sampler, GreedyPicksFirstArgmax) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(sample_token(std::vector<float>{1, 3, 2, 3}, p, {}, 0, {0, 0, 0}).token, 1);
}

TEST(Sampler, TinyTemperatureIsGreedy) {
  SamplingParams p;
  p.temperature = 1e-40;  // 1/T overflows f32: must not turn into NaN and pick a junk token
  const std::vector<float> z{0.5f, 2.0f, 1.0f, -3.0f};
  for (uint64_t step = 0; step < 20; ++step)
    EXPECT_EQ(sample_token(z, p, {}, 0, {0, 0, step}).token, 1);
}

TEST(Sampler, FollowsTheDistribution) {
  SamplingParams p;
  p.seed = 11;
  const auto h = histogram(log_probs({0.5, 0.3, 0.2}), p, 20000);
  EXPECT_NEAR(h.at(0) / 20000.0, 0.5, 0.015);
  EXPECT_NEAR(h.at(1) / 20000.0, 0.3, 0.015);
  EXPECT_NEAR(h.at(2) / 20000.0, 0.2, 0.015);
}

TEST(Sampler, TemperatureSharpens) {
  SamplingParams p;
  p.temperature = 0.5;  // p^2 renormalized: 0.25/0.38, 0.09/0.38, 0.04/0.38
  const auto h = histogram(log_probs({0.5, 0.3, 0.2}), p, 20000);
  EXPECT_NEAR(h.at(0) / 20000.0, 0.25 / 0.38, 0.015);
  EXPECT_NEAR(h.at(2) / 20000.0, 0.04 / 0.38, 0.015);
}

TEST(Sampler, TopKTopPMinPRestrictTheCandidates) {
  const auto z = log_probs({0.1, 0.45, 0.3, 0.15});
  SamplingParams k;
  k.top_k = 2;
  auto h = histogram(z, k, 4000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(2));

  SamplingParams top_p;
  top_p.top_p = 0.7;  // 0.45 + 0.3 reaches 0.7
  h = histogram(z, top_p, 4000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_NEAR(h.at(1) / 4000.0, 0.6, 0.03);

  SamplingParams min_p;
  min_p.min_p = 0.3;  // keep p >= 0.135: tokens 1, 2, 3
  h = histogram(z, min_p, 4000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_FALSE(h.count(0));
}

TEST(Sampler, SameKeySameToken) {
  SamplingParams p;
  p.seed = 5;
  const auto z = log_probs({0.25, 0.25, 0.25, 0.25});
  for (uint64_t step = 0; step < 50; ++step)
    EXPECT_EQ(sample_token(z, p, {}, 0, {0, 3, step}).token,
              sample_token(z, p, {}, 0, {0, 3, step}).token);
  int differ = 0;
  for (uint64_t step = 0; step < 50; ++step)
    differ += sample_token(z, p, {}, 0, {0, 3, step}).token !=
              sample_token(z, p, {}, 0, {0, 4, step}).token;
  EXPECT_GT(differ, 20);  // another sample index is another stream
}

TEST(Sampler, LogprobIsUnderTheRawModel) {
  SamplingParams p;
  p.temperature = 0.3;
  p.top_k = 1;
  p.repetition_penalty = 1.5;
  p.top_logprobs = 2;
  const auto z = log_probs({0.5, 0.3, 0.2});
  const std::vector<int32_t> history{2};
  const SampledToken t = sample_token(z, p, history, 0, {0, 0, 0});
  EXPECT_EQ(t.token, 0);
  EXPECT_NEAR(t.logprob, std::log(0.5), 1e-6);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[1].token, 1);
  EXPECT_NEAR(t.top[1].logprob, std::log(0.3), 1e-6);
}

TEST(Sampler, LogprobsOfHugeLogitsAreShiftedByTheirMax) {
  SamplingParams p;
  p.temperature = 0;
  p.top_logprobs = 3;
  const std::vector<float> z{1000, 1001, 999};  // only a max shift keeps exp finite
  const SampledToken t = sample_token(z, p, {}, 0, {0, 0, 0});
  const double log_z = std::log(std::exp(-1.0) + 1 + std::exp(-2.0));
  EXPECT_EQ(t.token, 1);
  EXPECT_NEAR(t.logprob, -log_z, 1e-5);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[2].token, 2);
  EXPECT_NEAR(t.top[0].logprob, -log_z, 1e-5);
  EXPECT_NEAR(t.top[1].logprob, -1 - log_z, 1e-5);
  EXPECT_NEAR(t.top[2].logprob, -2 - log_z, 1e-5);
}

TEST(Sampler, NonFiniteLogitsAreAnErrorNamingTheToken) {
  for (float bad : {std::nanf(""), INFINITY, -INFINITY})
    for (double temperature : {0.0, 1.0}) {
      std::vector<float> z(100, 0.5f);
      z[37] = bad;
      SamplingParams p;
      p.temperature = temperature;
      try {
        sample_token(z, p, {}, 0, {0, 0, 0});
        ADD_FAILURE() << "no error for " << bad;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token 37"), std::string::npos) << e.what();
      }
    }
}

TEST(Sampler, PenaltiesChangeTheChoice) {
  SamplingParams p;
  p.temperature = 0;
  const std::vector<float> z{2.0f, 1.9f, -1.0f};
  const std::vector<int32_t> history{7, 0};  // prompt token 7, generated token 0
  p.repetition_penalty = 1.2;                // 2.0 / 1.2 < 1.9
  EXPECT_EQ(sample_token(z, p, history, 1, {0, 0, 0}).token, 1);
  p.repetition_penalty = 1.0;
  p.presence_penalty = 0.5;
  EXPECT_EQ(sample_token(z, p, history, 1, {0, 0, 0}).token, 1);
  p.presence_penalty = 0.0;
  p.frequency_penalty = 0.05;  // one occurrence: 2.0 - 0.05 > 1.9
  EXPECT_EQ(sample_token(z, p, history, 1, {0, 0, 0}).token, 0);
  EXPECT_EQ(sample_token(z, p, history, 2, {0, 0, 0}).token, 0);  // token 0 is in the prompt part
}

TEST(Sampler, ValidateNamesTheField) {
  SamplingParams p;
  p.top_p = 0;
  try {
    p.validate();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos);
  }
  p = {};
  p.temperature = -1;
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.repetition_penalty = std::numeric_limits<double>::infinity();
  EXPECT_THROW(p.validate(), Error);
  p = {};
  p.presence_penalty = std::nan("");
  EXPECT_THROW(p.validate(), Error);
}

}  // namespace
}  // namespace dsmath

namespace dsmath {
namespace {

// The kept set by the definition: sort the whole vocabulary, take top_k, then the shortest
// prefix whose mass reaches top_p of the top-k mass.
std::vector<bool> reference_kept(const std::vector<float>& prob, int64_t top_k, double top_p) {
  std::vector<int32_t> order(prob.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return prob[size_t(a)] > prob[size_t(b)] || (prob[size_t(a)] == prob[size_t(b)] && a < b);
  });
  size_t n = top_k > 0 ? std::min(order.size(), size_t(top_k)) : order.size();
  double mass = 0;
  for (size_t i = 0; i < n; ++i) mass += prob[size_t(order[i])];
  if (top_p < 1.0) {
    double cum = 0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      if (cum >= top_p * mass) {
        keep = i;
        break;
      }
      cum += prob[size_t(order[i])];
    }
    n = keep;
  }
  std::vector<bool> kept(prob.size(), false);
  for (size_t i = 0; i < n; ++i) kept[size_t(order[i])] = true;
  return kept;
}

TEST(Truncation, KeepsWhatSortingTheVocabularyKeeps) {
  std::mt19937 rng(4);
  for (int trial = 0; trial < 200; ++trial) {
    // Small vocabularies take the few-candidates path; large flat ones the histogram.
    const size_t vocab = 1 + rng() % (trial % 2 ? 3000 : 30000);
    const double spread = 0.5 + (rng() % 100) / 5.0;  // flat to very peaked
    std::normal_distribution<float> normal(0, float(spread));
    std::vector<float> z(vocab);
    for (float& v : z) v = trial % 5 == 0 ? float(int(normal(rng))) : normal(rng);  // ties too
    const float zmax = *std::max_element(z.begin(), z.end());
    std::vector<float> prob(vocab);
    double total = 0;
    for (size_t i = 0; i < vocab; ++i) total += prob[i] = std::exp(z[i] - zmax);
    const int64_t top_k = trial % 3 == 0 ? 0 : 1 + int64_t(rng() % 50);
    const double top_p = trial % 4 == 1 ? 1.0 : 0.05 + (rng() % 95) / 100.0;
    const TruncationCutoff cut = truncation_cutoff(prob, total, top_k, top_p);
    const std::vector<bool> want = reference_kept(prob, top_k, top_p);
    for (size_t i = 0; i < vocab; ++i)
      ASSERT_EQ(cut.keeps(int32_t(i), prob[i]), want[i])
          << "trial " << trial << " token " << i << " vocab " << vocab << " top_k " << top_k
          << " top_p " << top_p;
  }
}

}  // namespace
}  // namespace dsmath
