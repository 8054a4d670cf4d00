#include "worker/engine/row_sample.h"

#include <bit>
#include <cstring>
#include <exception>

#include "common/core/error.h"

namespace dsmath {

namespace {

// Plain words: doubles and 64-bit values as two int32 halves (their bits, not a conversion).
struct Writer {
  std::vector<int32_t> words;
  void i32(int32_t v) { words.push_back(v); }
  void u64(uint64_t v) {
    words.push_back(int32_t(uint32_t(v)));
    words.push_back(int32_t(uint32_t(v >> 32)));
  }
  void f64(double v) { u64(std::bit_cast<uint64_t>(v)); }
};

struct Reader {
  std::span<const int32_t> words;
  size_t at = 0;
  int32_t i32() {
    DSMATH_CHECK(at < words.size(), "step plan sampling: truncated at word ", at);
    return words[at++];
  }
  uint64_t u64() {
    const uint64_t lo = uint32_t(i32());
    return lo | uint64_t(uint32_t(i32())) << 32;
  }
  double f64() { return std::bit_cast<double>(u64()); }
  size_t count() {
    const int32_t n = i32();
    DSMATH_CHECK(n >= 0 && size_t(n) <= words.size() - at, "step plan sampling: bad count ", n,
                 " at word ", at);
    return size_t(n);
  }
};

// Outcome layout, per row: token (int32), logprob (float), #top, (token, logprob)*, #error
// bytes, error bytes padded to 4.
void put(std::vector<char>& out, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  out.insert(out.end(), c, c + n);
}

}  // namespace

std::vector<int32_t> history_for(const SamplingParams& params, const std::vector<int32_t>& tokens) {
  return params.penalized() ? tokens : std::vector<int32_t>{};
}

// Layout: #samples, then per sample: row, seed, temperature, top_k, top_p, min_p, the three
// penalties, logprobs, top_logprobs, key (stream, sample_index, step), prompt_len, #history,
// history*.
std::vector<int32_t> encode_row_samples(const std::vector<RowSample>& samples) {
  Writer w;
  w.i32(int32_t(samples.size()));
  for (const RowSample& s : samples) {
    const SamplingParams& p = s.params;
    w.i32(s.row);
    w.u64(p.seed);
    w.f64(p.temperature);
    w.u64(uint64_t(p.top_k));
    w.f64(p.top_p);
    w.f64(p.min_p);
    w.f64(p.repetition_penalty);
    w.f64(p.presence_penalty);
    w.f64(p.frequency_penalty);
    w.i32(int32_t(p.logprobs));
    w.i32(int32_t(p.top_logprobs));
    w.u64(s.key.stream);
    w.u64(s.key.sample_index);
    w.u64(s.key.step);
    w.i32(s.prompt_len);
    w.i32(int32_t(s.history.size()));
    w.words.insert(w.words.end(), s.history.begin(), s.history.end());
  }
  return std::move(w.words);
}

std::vector<RowSample> decode_row_samples(std::span<const int32_t> words) {
  if (words.empty()) return {};
  Reader r{words};
  std::vector<RowSample> samples(r.count());
  for (RowSample& s : samples) {
    SamplingParams& p = s.params;
    s.row = r.i32();
    p.seed = r.u64();
    p.temperature = r.f64();
    p.top_k = int64_t(r.u64());
    p.top_p = r.f64();
    p.min_p = r.f64();
    p.repetition_penalty = r.f64();
    p.presence_penalty = r.f64();
    p.frequency_penalty = r.f64();
    p.logprobs = r.i32() != 0;
    p.top_logprobs = r.i32();
    s.key.stream = r.u64();
    s.key.sample_index = r.u64();
    s.key.step = r.u64();
    s.prompt_len = r.i32();
    for (size_t n = r.count(); n > 0; --n) s.history.push_back(r.i32());
  }
  DSMATH_CHECK(r.at == words.size(), "step plan sampling: ", words.size() - r.at,
               " trailing words");
  return samples;
}

std::vector<RowOutcome> sample_rows(std::span<const float> logits, size_t vocab,
                                    const std::vector<RowSample>& samples) {
  std::vector<RowOutcome> out(samples.size());
  const int64_t n = int64_t(samples.size());
  // Rows are independent; each thread keeps its own scratch (sampler.cpp).
#pragma omp parallel for schedule(dynamic) if (n > 1)
  for (int64_t i = 0; i < n; ++i) {
    const RowSample& s = samples[size_t(i)];
    try {
      DSMATH_CHECK(s.row >= 0 && (size_t(s.row) + 1) * vocab <= logits.size(), "logits row ", s.row,
                   " is outside the step's ", logits.size() / vocab, " rows");
      out[size_t(i)].token = sample_token(logits.subspan(size_t(s.row) * vocab, vocab), s.params,
                                          s.history, size_t(s.prompt_len), s.key);
    } catch (const std::exception& e) {
      out[size_t(i)].error = e.what();
    }
  }
  return out;
}

std::vector<char> encode_outcomes(const std::vector<RowOutcome>& outcomes) {
  std::vector<char> out;
  for (const RowOutcome& o : outcomes) {
    const int32_t ntop = int32_t(o.token.top.size());
    put(out, &o.token.token, 4);
    put(out, &o.token.logprob, 4);
    put(out, &ntop, 4);
    for (const TokenLogprob& t : o.token.top) {
      put(out, &t.token, 4);
      put(out, &t.logprob, 4);
    }
    std::string error = o.error;
    if (error.size() > kMaxErrorBytes) {
      const std::string cut = " [cut]";
      error.resize(kMaxErrorBytes - cut.size());
      error += cut;
    }
    const int32_t len = int32_t(error.size());
    put(out, &len, 4);
    put(out, error.data(), error.size());
    out.resize((out.size() + 3) / 4 * 4, '\0');
  }
  return out;
}

std::vector<RowOutcome> decode_outcomes(std::span<const char> bytes) {
  std::vector<RowOutcome> out;
  size_t at = 0;
  auto take = [&](void* p, size_t n) {
    DSMATH_CHECK(n <= bytes.size() - at, "sampled tokens: truncated at byte ", at);
    std::memcpy(p, bytes.data() + at, n);
    at += n;
  };
  auto count = [&](size_t bytes_each) {
    int32_t n = 0;
    take(&n, 4);
    DSMATH_CHECK(n >= 0 && size_t(n) * bytes_each <= bytes.size() - at,
                 "sampled tokens: bad count ", n, " at byte ", at - 4);
    return size_t(n);
  };
  while (at < bytes.size()) {
    RowOutcome& o = out.emplace_back();
    take(&o.token.token, 4);
    take(&o.token.logprob, 4);
    o.token.top.resize(count(8));
    for (TokenLogprob& t : o.token.top) {
      take(&t.token, 4);
      take(&t.logprob, 4);
    }
    o.error.resize(count(1));
    take(o.error.data(), o.error.size());
    at = (at + 3) / 4 * 4;
  }
  return out;
}

size_t max_outcome_bytes(const std::vector<RowSample>& samples) {
  size_t bytes = 0;
  for (const RowSample& s : samples)
    bytes += 16 + 8 * size_t(std::max<int64_t>(0, s.params.top_logprobs)) + kMaxErrorBytes + 4;
  return bytes;
}

}  // namespace dsmath
