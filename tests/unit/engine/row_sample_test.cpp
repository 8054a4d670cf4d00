// Sampling where the logits are (worker/engine/row_sample.h): the sampling instructions and the
// outcomes survive their trip between ranks bit for bit, sample_rows draws exactly what
// sample_token draws on the driver, a bad row becomes that row's error, and the receive bound
// covers any outcome.
#include "worker/engine/row_sample.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "common/core/error.h"

namespace dsmath {
namespace {

RowSample sample(int32_t row, uint64_t index) {
  RowSample s;
  s.row = row;
  s.params.temperature = 0.7;
  s.params.top_k = 40;
  s.params.top_p = 0.9;
  s.params.min_p = 0.01;
  s.params.logprobs = true;
  s.params.top_logprobs = 3;
  s.key = {0xFEDCBA9876543210ull, index, 11};
  s.prompt_len = 3;
  return s;
}

TEST(RowSample, InstructionsRoundTripBitForBit) {
  std::vector<RowSample> in = {sample(0, 0), sample(1, 1)};
  in[1].params.repetition_penalty = 1.1;
  in[1].params.presence_penalty = -0.25;
  in[1].params.frequency_penalty = 1e-300;  // a double, not a float
  in[0].params.seed = 0xA5A5A5A5DEADBEEFull;
  in[1].params.seed = 7;
  in[1].history = history_for(in[1].params, {5, 6, 7, 8});
  EXPECT_EQ(in[1].history, (std::vector<int32_t>{5, 6, 7, 8}));
  EXPECT_TRUE(history_for(in[0].params, {5, 6}).empty()) << "no penalty reads it";
  const std::vector<RowSample> out = decode_row_samples(encode_row_samples(in));
  ASSERT_EQ(out.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(out[i].row, in[i].row);
    EXPECT_EQ(out[i].params.seed, in[i].params.seed);
    EXPECT_EQ(out[i].params.temperature, in[i].params.temperature);
    EXPECT_EQ(out[i].params.top_k, in[i].params.top_k);
    EXPECT_EQ(out[i].params.top_p, in[i].params.top_p);
    EXPECT_EQ(out[i].params.min_p, in[i].params.min_p);
    EXPECT_EQ(out[i].params.repetition_penalty, in[i].params.repetition_penalty);
    EXPECT_EQ(out[i].params.presence_penalty, in[i].params.presence_penalty);
    EXPECT_EQ(out[i].params.frequency_penalty, in[i].params.frequency_penalty);
    EXPECT_EQ(out[i].params.logprobs, in[i].params.logprobs);
    EXPECT_EQ(out[i].params.top_logprobs, in[i].params.top_logprobs);
    EXPECT_EQ(out[i].key.stream, in[i].key.stream);
    EXPECT_EQ(out[i].key.sample_index, in[i].key.sample_index);
    EXPECT_EQ(out[i].key.step, in[i].key.step);
    EXPECT_EQ(out[i].prompt_len, in[i].prompt_len);
    EXPECT_EQ(out[i].history, in[i].history);
  }
  std::vector<int32_t> words = encode_row_samples(in);
  words.pop_back();
  EXPECT_THROW(decode_row_samples(words), Error);
  EXPECT_TRUE(decode_row_samples({}).empty());
}

TEST(RowSample, SampleRowsDrawsWhatSampleTokenDraws) {
  const size_t vocab = 1000;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0, 3);
  std::vector<float> logits(3 * vocab);
  for (float& z : logits) z = normal(rng);
  logits[2 * vocab + 17] = std::numeric_limits<float>::quiet_NaN();  // row 2 broke down
  std::vector<RowSample> samples;
  for (uint64_t i = 0; i < 6; ++i) samples.push_back(sample(int32_t(i % 2), i));
  samples.push_back(sample(2, 9));
  samples.push_back(sample(3, 9));  // past the step's rows
  const std::vector<RowOutcome> got = sample_rows(logits, vocab, samples);
  ASSERT_EQ(got.size(), samples.size());
  for (size_t i = 0; i < 6; ++i) {
    const RowSample& s = samples[i];
    const SampledToken want =
        sample_token(std::span<const float>(logits).subspan(size_t(s.row) * vocab, vocab), s.params,
                     s.history, size_t(s.prompt_len), s.key);
    EXPECT_TRUE(got[i].error.empty()) << got[i].error;
    EXPECT_EQ(got[i].token.token, want.token);
    EXPECT_EQ(got[i].token.logprob, want.logprob);
    ASSERT_EQ(got[i].token.top.size(), 3u);
    EXPECT_EQ(got[i].token.top[2].token, want.top[2].token);
  }
  EXPECT_FALSE(got[6].error.empty()) << "a NaN logit is the row's error";
  EXPECT_NE(got[7].error.find("outside the step's 3 rows"), std::string::npos) << got[7].error;

  // Across the wire, within the receiver's bound.
  const std::vector<char> bytes = encode_outcomes(got);
  EXPECT_LE(bytes.size(), max_outcome_bytes(samples));
  const std::vector<RowOutcome> back = decode_outcomes(bytes);
  ASSERT_EQ(back.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(back[i].token.token, got[i].token.token);
    EXPECT_EQ(back[i].token.logprob, got[i].token.logprob);
    ASSERT_EQ(back[i].token.top.size(), got[i].token.top.size());
    for (size_t k = 0; k < got[i].token.top.size(); ++k) {
      EXPECT_EQ(back[i].token.top[k].token, got[i].token.top[k].token);
      EXPECT_EQ(back[i].token.top[k].logprob, got[i].token.top[k].logprob);
    }
    EXPECT_EQ(back[i].error, got[i].error);
  }
}

TEST(RowSample, LongErrorsAreCutAndSaySo) {
  RowOutcome o;
  o.error = std::string(3 * kMaxErrorBytes, 'x');
  const std::vector<char> bytes = encode_outcomes({o});
  EXPECT_LE(bytes.size(), max_outcome_bytes({RowSample{}}));
  const std::vector<RowOutcome> back = decode_outcomes(bytes);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].error.size(), kMaxErrorBytes);
  EXPECT_EQ(back[0].error.substr(kMaxErrorBytes - 6), " [cut]");
  EXPECT_THROW(decode_outcomes(std::span(bytes).first(bytes.size() - 8)), Error);
}

}  // namespace
}  // namespace dsmath
