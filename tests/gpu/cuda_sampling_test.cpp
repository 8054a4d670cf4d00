// Sampling on the GPU (DeviceSampler, kernels/cuda/sampling.cu) against the CPU's sample_rows on
// the same logits: greedy, seeded draws with temperature, top_k, top_p, min_p and their
// combinations, each penalty, logprobs and top_logprobs, exact ties, non-finite logits, a row
// outside the step, and vocab-parallel shards (tp 2 and 4). The same token ids, the same errors,
// logprobs within 1e-4. The device's outcome buffer is poisoned before every kernel (the sampler
// does it), so a field the kernel does not write cannot pass.
//
// The logits are random normals at several scales over vocabularies of 1000, 32000 and 102400:
// distinct values are well separated except by chance. What float rounding can still decide is
// a draw or a top_p cut that falls within rounding of a boundary between two tokens (the CPU's
// e^x is a polynomial within 5e-7 and it sums in f32 lanes; the GPU's is expf, summed in fixed
// point), or two tokens whose probabilities differ by less than rounding at a top_k / top_p
// boundary. So each sampled row's margin is measured in double precision first (how far u x mass,
// top_p x mass, min_p and the boundary ranks are from flipping, relative to the mass), and a row
// closer than 1e-5 is not compared (counted; most rows are compared). Greedy, ties of equal
// logits, penalties, logprobs and top_logprobs involve no such sums and are compared always.
// Without a CUDA device every test reports SKIPPED.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "common/core/error.h"
#include "kernels/cuda/sampling.h"
#include "worker/engine/device_sampler.h"
#include "worker/engine/rng.h"
#include "worker/engine/row_sample.h"

namespace dsmath {
namespace {

bool have_gpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device on this machine"

constexpr double kMinMargin = 1e-5;

std::vector<float> normal_logits(int64_t rows, int64_t vocab, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(size_t(rows * vocab));
  for (float& f : v) f = dist(rng);
  return v;
}

// Device memory for one test's logits (and the stream the sampler runs on).
struct Gpu {
  cudaStream_t stream = nullptr;
  std::vector<float*> buffers;
  Gpu() {
    EXPECT_EQ(cudaSetDevice(0), cudaSuccess);
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  }
  ~Gpu() {
    cudaStreamSynchronize(stream);
    for (float* b : buffers) cudaFree(b);
    cudaStreamDestroy(stream);
  }
  // `logits` [rows, vocab] on the device, as the model leaves them at `tp`: [tp][rows][local].
  LogitsOnDevice upload(const std::vector<float>& logits, int64_t rows, int64_t vocab,
                        int64_t tp = 1) {
    std::vector<float> laid(logits.size());
    const int64_t local = vocab / tp;
    for (int64_t r = 0; r < tp; ++r)
      for (int64_t i = 0; i < rows; ++i)
        std::copy_n(logits.data() + i * vocab + r * local, local,
                    laid.data() + (r * rows + i) * local);
    float* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, laid.size() * sizeof(float)), cudaSuccess);
    buffers.push_back(d);
    EXPECT_EQ(cudaMemcpy(d, laid.data(), laid.size() * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
    // A pageable copy may still be in flight when cudaMemcpy returns, and the sampler's stream
    // does not wait for the legacy stream.
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    return {d, rows, vocab, tp};
  }
};

// How far (relative) the row's sampled outcome is from a boundary that float rounding could
// cross, in double precision: 1 for greedy.
double margin(std::vector<float> z, const RowSample& s) {
  const SamplingParams& p = s.params;
  if (p.greedy()) return 1;
  if (p.penalized()) apply_penalties(z, p, s.history, size_t(s.prompt_len));
  const size_t n = z.size();
  const float zmax = *std::max_element(z.begin(), z.end());
  const float scale = float(1.0 / p.temperature);
  std::vector<double> prob(n);
  for (size_t i = 0; i < n; ++i) prob[i] = std::exp(double((z[i] - zmax) * scale));
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return z[size_t(a)] > z[size_t(b)]; });
  double m = 1;
  // Two neighbours in rank whose probabilities differ by less than rounding may swap.
  auto boundary = [&](size_t kept) {
    if (kept >= n) return;
    const double a = prob[size_t(order[kept - 1])], b = prob[size_t(order[kept])];
    if (z[size_t(order[kept - 1])] != z[size_t(order[kept])]) m = std::min(m, (a - b) / a);
  };
  size_t kept = n;
  if (p.top_k > 0 && size_t(p.top_k) < n) {
    kept = size_t(p.top_k);
    boundary(kept);
  }
  if (p.top_p < 1) {
    double mass = 0;
    for (size_t j = 0; j < kept; ++j) mass += prob[size_t(order[j])];
    const double need = p.top_p * mass;
    double cum = 0;
    for (size_t j = 0; j < kept; ++j) {
      const double before = cum;
      cum += prob[size_t(order[j])];
      if (cum >= need) {
        m = std::min(m, std::min(cum - need, need - before) / mass);
        kept = j + 1;
        boundary(kept);
        break;
      }
    }
  }
  std::vector<bool> keep(n, false);
  for (size_t j = 0; j < kept; ++j) keep[size_t(order[j])] = true;
  if (p.min_p > 0)
    for (size_t i = 0; i < n; ++i)
      if (keep[i]) {
        m = std::min(m, std::fabs(prob[i] - p.min_p) / p.min_p);
        keep[i] = prob[i] >= p.min_p;
      }
  double total = 0;
  for (size_t i = 0; i < n; ++i)
    if (keep[i]) total += prob[i];
  const double target =
      philox_uniform(p.seed, s.key.stream, s.key.sample_index, s.key.step) * total;
  double cum = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!keep[i]) continue;
    const double before = cum;
    cum += prob[i];
    if (cum > target) return std::min(m, std::min(cum - target, target - before) / total);
  }
  return m;
}

void expect_same(const RowOutcome& gpu, const RowOutcome& cpu, const std::string& what) {
  EXPECT_EQ(gpu.error, cpu.error) << what;
  if (!cpu.error.empty()) return;
  EXPECT_EQ(gpu.token.token, cpu.token.token) << what;
  EXPECT_NEAR(gpu.token.logprob, cpu.token.logprob, 1e-4) << what;
  ASSERT_EQ(gpu.token.top.size(), cpu.token.top.size()) << what;
  for (size_t j = 0; j < cpu.token.top.size(); ++j) {
    EXPECT_EQ(gpu.token.top[j].token, cpu.token.top[j].token) << what << ": top " << j;
    EXPECT_NEAR(gpu.token.top[j].logprob, cpu.token.top[j].logprob, 1e-4) << what << ": top " << j;
  }
}

struct Counted {
  int compared = 0, skipped = 0;
};

// Every sample through the GPU (at `tp`) and the CPU; rows too close to a rounding boundary are
// skipped (counted). Returns the GPU's outcomes.
std::vector<RowOutcome> compare(Gpu& gpu, DeviceSampler& sampler, const std::vector<float>& logits,
                                int64_t rows, int64_t vocab, const std::vector<RowSample>& samples,
                                Counted& counted, const std::string& what, int64_t tp = 1) {
  const std::vector<RowOutcome> on_gpu =
      sampler.sample(gpu.upload(logits, rows, vocab, tp), samples);
  const std::vector<RowOutcome> on_cpu = sample_rows(logits, size_t(vocab), samples);
  EXPECT_EQ(on_gpu.size(), samples.size()) << what;
  if (on_gpu.size() != samples.size()) return on_gpu;
  for (size_t i = 0; i < samples.size(); ++i) {
    const RowSample& s = samples[i];
    const bool in_step = s.row >= 0 && s.row < rows;
    if (in_step && on_cpu[i].error.empty()) {
      const std::vector<float> row(logits.begin() + s.row * vocab,
                                   logits.begin() + (s.row + 1) * vocab);
      if (margin(row, s) < kMinMargin) {
        ++counted.skipped;
        continue;
      }
    }
    ++counted.compared;
    expect_same(on_gpu[i], on_cpu[i], cat(what, ", sample ", i, " (row ", s.row, ")"));
  }
  return on_gpu;
}

RowSample sample_of(int32_t row, SamplingParams params, uint64_t step, uint64_t index = 0) {
  RowSample s;
  s.row = row;
  s.params = std::move(params);
  s.key = {rng_stream_id(cat("request ", row)), index, step};
  return s;
}

TEST(CudaSampling, GreedyTakesTheFirstMaxWithItsLogprobs) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  Counted counted;
  for (int64_t vocab : {1000, 32000, 102400})
    for (float scale : {1.0f, 4.0f, 16.0f}) {
      const int64_t rows = 3;
      std::vector<float> logits = normal_logits(rows, vocab, uint32_t(vocab) + 7, scale);
      // Row 2: its max twice (the first wins), as torch.argmax.
      const auto top = std::max_element(logits.begin() + 2 * vocab, logits.end());
      logits[size_t(2 * vocab + vocab / 2)] = *top;
      std::vector<RowSample> samples;
      for (int32_t r = 0; r < rows; ++r) {
        SamplingParams p;
        p.temperature = 0;
        samples.push_back(sample_of(r, p, 0));
        p.logprobs = true;
        samples.push_back(sample_of(r, p, 1));
        p.top_logprobs = 20;
        samples.push_back(sample_of(r, p, 2));
        p.logprobs = false;
        p.top_logprobs = 3;
        p.temperature = 1e-6;  // greedy in effect
        samples.push_back(sample_of(r, p, 3));
      }
      compare(gpu, sampler, logits, rows, vocab, samples, counted,
              cat("vocab ", vocab, " scale ", scale));
    }
  EXPECT_EQ(counted.skipped, 0);
}

// The sampling parameters the seeded tests run, each at several keys.
std::vector<SamplingParams> sampled_params(int64_t vocab) {
  std::vector<SamplingParams> out;
  auto add = [&](double t, int64_t k, double top_p, double min_p) {
    SamplingParams p;
    p.seed = 1234 + out.size();
    p.temperature = t;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.logprobs = out.size() % 2 == 0;
    p.top_logprobs = out.size() % 3 == 0 ? 5 : 0;
    out.push_back(p);
  };
  for (double t : {1.0, 0.7, 1.5}) add(t, 0, 1, 0);
  for (int64_t k : {int64_t(1), int64_t(5), int64_t(50), int64_t(1000), vocab - 1, vocab + 10})
    add(1.0, k, 1, 0);
  for (double top_p : {0.1, 0.5, 0.9, 0.99}) add(1.0, 0, top_p, 0);
  add(0.8, 50, 0.8, 0);
  add(1.2, 1000, 0.95, 0);
  add(1.0, 0, 1, 0.05);
  add(1.0, 0, 1, 0.3);
  add(0.8, 40, 0.9, 0.02);
  add(1.3, 0, 0.7, 0.01);
  return out;
}

TEST(CudaSampling, SeededDrawsWithTruncationAreTheCpus) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  for (int64_t vocab : {1000, 32000, 102400}) {
    Counted counted;
    for (float scale : {1.0f, 3.0f, 8.0f}) {
      const int64_t rows = 3;
      const std::vector<float> logits = normal_logits(rows, vocab, uint32_t(vocab) + 11, scale);
      std::vector<RowSample> samples;
      for (const SamplingParams& p : sampled_params(vocab))
        for (uint64_t step = 0; step < 6; ++step)
          samples.push_back(sample_of(int32_t(step % rows), p, step, step % 2));
      compare(gpu, sampler, logits, rows, vocab, samples, counted,
              cat("vocab ", vocab, " scale ", scale));
    }
    std::printf("vocab %lld: %d draws compared, %d within rounding of a boundary\n",
                static_cast<long long>(vocab), counted.compared, counted.skipped);
    EXPECT_GT(counted.compared, 3 * counted.skipped) << "vocab " << vocab;
  }
}

TEST(CudaSampling, TiesRankByLowerIdAsOnTheCpu) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  Counted counted;
  for (int64_t vocab : {1000, 32000}) {
    // Logits on a grid of 0.5: thousands of exact ties.
    std::vector<float> logits = normal_logits(2, vocab, 99, 2.0f);
    for (float& v : logits) v = std::round(v * 2) / 2;
    std::vector<RowSample> samples;
    for (int32_t r = 0; r < 2; ++r) {
      SamplingParams greedy;
      greedy.temperature = 0;
      greedy.top_logprobs = 20;
      samples.push_back(sample_of(r, greedy, 0));
      for (int64_t k : {1, 2, 7, 100, 999}) {
        SamplingParams p;
        p.seed = uint64_t(k);
        p.top_k = k;
        p.top_logprobs = 20;
        for (uint64_t step = 0; step < 4; ++step) samples.push_back(sample_of(r, p, step));
      }
      for (double top_p : {0.3, 0.8}) {
        SamplingParams p;
        p.top_p = top_p;
        p.min_p = 0.01;
        for (uint64_t step = 0; step < 4; ++step) samples.push_back(sample_of(r, p, step));
      }
    }
    compare(gpu, sampler, logits, 2, vocab, samples, counted, cat("ties, vocab ", vocab));
  }
  EXPECT_GT(counted.compared, 3 * counted.skipped);
}

TEST(CudaSampling, PenaltiesAreTheCpus) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  Counted counted;
  for (int64_t vocab : {1000, 32000, 102400}) {
    const int64_t rows = 2;
    std::vector<float> logits = normal_logits(rows, vocab, 5, 3.0f);
    const std::vector<int32_t> history = {5, 17, 17, 999, -3, int32_t(vocab) + 7, 5, 42, 17, 8};
    // The history's tokens at the top (positive and negative logits), so the penalties decide.
    for (int64_t r = 0; r < rows; ++r) {
      float* z = logits.data() + r * vocab;
      const float top = *std::max_element(z, z + vocab);
      z[5] = top + 0.3f;
      z[17] = top + 0.2f;
      z[42] = top + 0.1f;
      z[999] = -0.5f;
      z[8] = top;
    }
    std::vector<RowSample> samples;
    auto add = [&](double rep, double presence, double frequency) {
      for (double t : {0.0, 1.0})
        for (int32_t r = 0; r < rows; ++r) {
          SamplingParams p;
          p.temperature = t;
          p.top_k = t > 0 ? 20 : 0;
          p.seed = 77;
          p.repetition_penalty = rep;
          p.presence_penalty = presence;
          p.frequency_penalty = frequency;
          p.logprobs = true;
          p.top_logprobs = 4;
          RowSample s = sample_of(r, p, uint64_t(samples.size()));
          s.history = history;
          s.prompt_len = 3;
          samples.push_back(s);
        }
    };
    add(1.3, 0, 0);
    add(0.7, 0, 0);
    add(1.0, 0.5, 0);
    add(1.0, 0, 0.3);
    add(1.0, -0.4, 0.2);
    add(1.2, 0.3, 0.6);
    add(3.0, 2.0, 1.0);
    compare(gpu, sampler, logits, rows, vocab, samples, counted, cat("penalties, vocab ", vocab));
  }
  EXPECT_GT(counted.compared, 3 * counted.skipped);
}

TEST(CudaSampling, NonFiniteLogitsAndBadRowsAreTheCpusErrors) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  const int64_t vocab = 32000, rows = 4;
  std::vector<float> logits = normal_logits(rows, vocab, 3, 2.0f);
  logits[size_t(0 * vocab + 777)] = std::nanf("");
  logits[size_t(1 * vocab + 5)] = INFINITY;
  logits[size_t(1 * vocab + 900)] = std::nanf("");
  logits[size_t(2 * vocab + 31999)] = -INFINITY;
  logits[size_t(3 * vocab + 12)] = 5.0f;  // finite; its penalty overflows f32
  logits[size_t(3 * vocab + 3)] = -1.0f;  // penalized too, and stays finite
  std::vector<RowSample> samples;
  for (int32_t r = 0; r < rows; ++r)
    for (double t : {0.0, 1.0}) {
      SamplingParams p;
      p.temperature = t;
      p.logprobs = true;
      samples.push_back(sample_of(r, p, 0));
      p.repetition_penalty = 1e-39;
      RowSample s = sample_of(r, p, 1);
      s.history = {12, 3};
      samples.push_back(s);
    }
  SamplingParams p;
  samples.push_back(sample_of(int32_t(rows), p, 0));  // outside the step
  samples.push_back(sample_of(-1, p, 0));
  Counted counted;
  const std::vector<RowOutcome> out =
      compare(gpu, sampler, logits, rows, vocab, samples, counted, "non-finite");
  ASSERT_EQ(out.size(), samples.size());
  EXPECT_NE(out[0].error.find("non-finite logit (nan for token 777)"), std::string::npos)
      << out[0].error;
  EXPECT_NE(out[4].error.find("(inf for token 5)"), std::string::npos) << out[4].error;
  EXPECT_NE(out[8].error.find("(-inf for token 31999)"), std::string::npos) << out[8].error;
  EXPECT_TRUE(out[12].error.empty()) << out[12].error;
  EXPECT_NE(out[13].error.find("(inf for token 12)"), std::string::npos) << out[13].error;
  EXPECT_NE(out[16].error.find("outside the step's 4 rows"), std::string::npos) << out[16].error;
}

TEST(CudaSampling, VocabParallelShardsGiveTheSameOutcomes) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  const int64_t vocab = 32000, rows = 5;
  const std::vector<float> logits = normal_logits(rows, vocab, 21, 4.0f);
  std::vector<RowSample> samples;
  for (const SamplingParams& p : sampled_params(vocab))
    for (uint64_t step = 0; step < 3; ++step)
      samples.push_back(sample_of(int32_t((step * 3 + p.seed) % rows), p, step));
  Counted counted;
  const std::vector<RowOutcome> one =
      compare(gpu, sampler, logits, rows, vocab, samples, counted, "tp 1");
  for (int64_t tp : {2, 4}) {
    const std::vector<RowOutcome> sharded =
        compare(gpu, sampler, logits, rows, vocab, samples, counted, cat("tp ", tp), tp);
    ASSERT_EQ(sharded.size(), one.size());
    for (size_t i = 0; i < one.size(); ++i) {  // bit for bit: the same rows, reassembled
      EXPECT_EQ(sharded[i].token.token, one[i].token.token) << "tp " << tp << ", sample " << i;
      EXPECT_EQ(sharded[i].token.logprob, one[i].token.logprob) << "tp " << tp << ", sample " << i;
    }
  }
  EXPECT_GT(counted.compared, 3 * counted.skipped);
}

// The engine's overlap: a second sampling launched before the first is collected, the next
// step's token placeholders filled on the device from the first's outcomes (a sample that drew
// no row, or an index outside them, gives token 0), and collects returning them in order.
TEST(CudaSampling, TwoSamplingsInFlightFillTheNextStepsPlaceholders) {
  REQUIRE_GPU();
  Gpu gpu;
  DeviceSampler sampler(0, gpu.stream);
  const int64_t vocab = 1000, rows = 3;
  const std::vector<float> first = normal_logits(rows, vocab, 31, 4.0f);
  const std::vector<float> second = normal_logits(rows, vocab, 32, 4.0f);
  SamplingParams greedy;
  greedy.temperature = 0;
  // Sample 1 names a row outside the step: an error found on the host, no outcome on the device.
  const std::vector<RowSample> samples = {sample_of(0, greedy, 0), sample_of(7, greedy, 0),
                                          sample_of(2, greedy, 0)};
  sampler.launch(gpu.upload(first, rows, vocab), samples);
  EXPECT_EQ(sampler.newest_outcome_index(1), -1);
  const SampledTokens on_device = sampler.newest_on_device();
  EXPECT_EQ(on_device.count, 2);
  const std::vector<int32_t> ids = {5, token_placeholder(sampler.newest_outcome_index(0)),
                                    token_placeholder(sampler.newest_outcome_index(2)), 7,
                                    token_placeholder(99)};
  int32_t* d_ids = nullptr;
  ASSERT_EQ(cudaMalloc(&d_ids, ids.size() * sizeof(int32_t)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_ids, ids.data(), ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
            cudaSuccess);
  cuda::fill_token_placeholders(d_ids, int64_t(ids.size()),
                                static_cast<const cuda::SampleRowOutcome*>(on_device.outcomes),
                                on_device.count, gpu.stream);
  sampler.launch(gpu.upload(second, rows, vocab), samples);
  EXPECT_THROW(sampler.launch(gpu.upload(second, rows, vocab), samples), Error)
      << "a third sampling before any collect";
  const std::vector<RowOutcome> got_first = sampler.collect();
  const std::vector<RowOutcome> got_second = sampler.collect();
  const std::vector<RowOutcome> want_first = sample_rows(first, size_t(vocab), samples);
  const std::vector<RowOutcome> want_second = sample_rows(second, size_t(vocab), samples);
  for (size_t i = 0; i < samples.size(); ++i) {
    expect_same(got_first[i], want_first[i], cat("first, sample ", i));
    expect_same(got_second[i], want_second[i], cat("second, sample ", i));
  }
  std::vector<int32_t> filled(ids.size());
  ASSERT_EQ(cudaStreamSynchronize(gpu.stream), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(filled.data(), d_ids, ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(d_ids);
  EXPECT_EQ(filled,
            (std::vector<int32_t>{5, want_first[0].token.token, want_first[2].token.token, 7, 0}));
}

}  // namespace
}  // namespace dsmath
