#include "worker/engine/device_sampler.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <unordered_map>

#include "common/core/error.h"
#include "kernels/cuda/launch.h"
#include "worker/engine/rng.h"

namespace dsmath {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The tokens the penalties touch, as sampler.cpp's apply_penalties walks them: the repetition
// penalty every distinct token of the history, presence and frequency the generated part
// (from prompt_len) with its counts; ids outside the vocabulary are skipped.
void add_penalties(const RowSample& s, int64_t vocab, std::vector<cuda::PenaltyEntry>& out) {
  const SamplingParams& p = s.params;
  std::map<int32_t, cuda::PenaltyEntry> entries;
  auto inside = [&](int32_t t) { return t >= 0 && int64_t(t) < vocab; };
  if (p.repetition_penalty != 1.0)
    for (int32_t t : s.history)
      if (inside(t)) {
        cuda::PenaltyEntry& e = entries[t];
        e.token = t;
        e.repeat = 1;
      }
  if (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) {
    std::unordered_map<int32_t, int> counts;
    for (size_t i = size_t(s.prompt_len); i < s.history.size(); ++i) ++counts[s.history[i]];
    for (auto [t, n] : counts) {
      if (!inside(t)) continue;
      cuda::PenaltyEntry& e = entries[t];
      e.token = t;
      e.subtracted = 1;
      e.subtract = float(p.frequency_penalty * n + p.presence_penalty);  // as the host forms it
    }
  }
  for (const auto& [t, e] : entries) out.push_back(e);
}

}  // namespace

DeviceSampler::DeviceSampler(int device, cudaStream_t stream)
    : device_(device), stream_(stream), allocator_(device, stream) {
  for (Slot& slot : slots_) {
    DSMATH_CUDA_CHECK(cudaEventCreate(&slot.began));
    DSMATH_CUDA_CHECK(cudaEventCreate(&slot.ended));
  }
}

DeviceSampler::~DeviceSampler() {
  cudaStreamSynchronize(stream_);
  work_.reset();
  assembled_.reset();
  for (Slot& slot : slots_) {
    slot.inputs.reset();
    slot.outcomes.reset();
    if (slot.pinned_in != nullptr) cudaFreeHost(slot.pinned_in);
    if (slot.pinned_out != nullptr) cudaFreeHost(slot.pinned_out);
    if (slot.began != nullptr) cudaEventDestroy(slot.began);
    if (slot.ended != nullptr) cudaEventDestroy(slot.ended);
  }
}

void* DeviceSampler::pinned(void*& buffer, size_t& capacity, size_t bytes) {
  if (bytes <= capacity && buffer != nullptr) return buffer;
  const size_t grown = std::max({bytes, 2 * capacity, size_t(1) << 14});
  if (buffer != nullptr) DSMATH_CUDA_CHECK(cudaFreeHost(buffer));
  buffer = nullptr;
  capacity = 0;
  DSMATH_CUDA_CHECK(cudaHostAlloc(&buffer, grown, cudaHostAllocDefault));
  capacity = grown;
  return buffer;
}

void* DeviceSampler::on_device(std::shared_ptr<void>& buffer, size_t& capacity, size_t bytes) {
  if (bytes > capacity || buffer == nullptr) {
    const size_t grown = std::max(bytes, 2 * capacity);
    buffer = allocator_.allocate(grown);  // the old one is freed in stream order
    capacity = grown;
  }
  return buffer.get();
}

DeviceRows prepare_device_rows(const std::vector<RowSample>& samples, int64_t rows, int64_t vocab,
                               std::vector<RowOutcome>& out) {
  DeviceRows d;
  for (size_t i = 0; i < samples.size(); ++i) {
    const RowSample& s = samples[i];
    if (s.row < 0 || int64_t(s.row) >= rows) {
      out[i].error = cat("logits row ", s.row, " is outside the step's ", rows, " rows");
      continue;
    }
    const SamplingParams& p = s.params;
    cuda::SampleRowParams r;
    r.row = s.row;
    r.greedy = p.greedy() ? 1 : 0;
    r.top_k = p.top_k > 0 && p.top_k < vocab ? p.top_k : 0;
    r.top_p = p.top_p;
    r.min_p = float(p.min_p);
    r.repetition_penalty = p.repetition_penalty;
    if (!p.greedy()) {
      r.inv_temperature = float(1.0 / p.temperature);
      r.uniform = philox_uniform(p.seed, s.key.stream, s.key.sample_index, s.key.step);
    }
    r.logprob = p.logprobs || p.top_logprobs > 0 ? 1 : 0;
    r.top_logprobs = int32_t(std::clamp<int64_t>(p.top_logprobs, 0, cuda::kMaxTopLogprobs));
    r.penalty_begin = int32_t(d.penalties.size());
    if (p.penalized()) add_penalties(s, vocab, d.penalties);
    r.penalty_count = int32_t(d.penalties.size()) - r.penalty_begin;
    r.work = !p.greedy() || r.penalty_count > 0 ? d.work_rows++ : -1;
    d.params.push_back(r);
    d.sample_of.push_back(i);
  }
  return d;
}

void read_device_outcomes(const DeviceRows& d, const cuda::SampleRowOutcome* outcomes,
                          int64_t vocab, std::vector<RowOutcome>& out) {
  for (size_t j = 0; j < d.params.size(); ++j) {
    const cuda::SampleRowOutcome& o = outcomes[j];
    RowOutcome& result = out[d.sample_of[j]];
    if (o.status == cuda::kNonFiniteLogit) {
      DSMATH_CHECK(o.bad_token >= 0 && o.bad_token < vocab,
                   "sampling on the GPU: a non-finite logit at token ", o.bad_token);
      result.error = non_finite_logit_message(o.bad_value, size_t(o.bad_token));
      continue;
    }
    DSMATH_CHECK(o.status == cuda::kSampled && o.token >= 0 && o.token < vocab &&
                     o.top_count == std::min<int64_t>(d.params[j].top_logprobs, vocab),
                 "sampling on the GPU: row ", j, " came back as status ", o.status, ", token ",
                 o.token, ", ", o.top_count, " top logprobs");
    result.token.token = o.token;
    result.token.logprob = o.logprob;
    for (int32_t t = 0; t < o.top_count; ++t)
      result.token.top.push_back({o.top_tokens[t], o.top_logprobs[t]});
  }
}

void DeviceSampler::launch(const LogitsOnDevice& logits, const std::vector<RowSample>& samples) {
  const auto started = std::chrono::steady_clock::now();
  const int64_t vocab = logits.vocab;
  DSMATH_CHECK(
      vocab > 0 && vocab <= cuda::kMaxSamplingVocab && logits.tp >= 1 && vocab % logits.tp == 0,
      "sampling on the GPU: ", vocab, " logits per row in ", logits.tp, " shards");
  Slot& slot = slots_[next_];
  // Its pinned buffers were last read by a collect(): free to rewrite.
  DSMATH_CHECK(!slot.busy, "sampling on the GPU: more than two steps launched, none collected");
  slot.busy = true;
  newest_ = next_;
  next_ = 1 - next_;
  slot.vocab = vocab;
  slot.out.assign(samples.size(), RowOutcome{});
  slot.rows = prepare_device_rows(samples, logits.rows, vocab, slot.out);
  slot.outcome_of.assign(samples.size(), -1);
  for (size_t j = 0; j < slot.rows.sample_of.size(); ++j)
    slot.outcome_of[slot.rows.sample_of[j]] = int32_t(j);
  const std::vector<cuda::SampleRowParams>& params = slot.rows.params;
  const std::vector<cuda::PenaltyEntry>& penalties = slot.rows.penalties;
  slot.host_seconds = 0;
  if (params.empty()) return;

  DSMATH_CUDA_CHECK(cudaSetDevice(device_));  // the step may come from another thread
  const int64_t n = int64_t(params.size());
  const size_t params_bytes = params.size() * sizeof(cuda::SampleRowParams);
  const size_t in_bytes = params_bytes + penalties.size() * sizeof(cuda::PenaltyEntry);
  const size_t out_bytes = params.size() * sizeof(cuda::SampleRowOutcome);
  auto* in = static_cast<char*>(pinned(slot.pinned_in, slot.pinned_in_bytes, in_bytes));
  std::memcpy(in, params.data(), params_bytes);
  if (!penalties.empty())
    std::memcpy(in + params_bytes, penalties.data(), penalties.size() * sizeof(cuda::PenaltyEntry));
  auto* host_out = pinned(slot.pinned_out, slot.pinned_out_bytes, out_bytes);

  auto* d_in = static_cast<char*>(on_device(slot.inputs, slot.inputs_bytes, in_bytes));
  auto* d_out = static_cast<cuda::SampleRowOutcome*>(
      on_device(slot.outcomes, slot.outcomes_bytes, out_bytes));
  auto* work = static_cast<float*>(
      on_device(work_, work_bytes_,
                size_t(std::max<int64_t>(slot.rows.work_rows, 1) * vocab) * sizeof(float)));
  const float* rows = logits.data;
  slot.host_seconds = seconds_since(started);
  DSMATH_CUDA_CHECK(cudaEventRecord(slot.began, stream_));  // the forward's kernels are before it
  if (logits.tp > 1) {
    auto* full = static_cast<float*>(
        on_device(assembled_, assembled_bytes_, size_t(logits.rows * vocab) * sizeof(float)));
    cuda::assemble_vocab_shards(logits.data, logits.tp, logits.rows, vocab / logits.tp, full,
                                stream_);
    rows = full;
  }
  DSMATH_CUDA_CHECK(cudaMemcpyAsync(d_in, in, in_bytes, cudaMemcpyHostToDevice, stream_));
  // Poisoned first: a field the kernel does not write comes back as garbage, not as the last
  // step's value.
  DSMATH_CUDA_CHECK(cudaMemsetAsync(d_out, 0xFF, out_bytes, stream_));
  cuda::sample_rows(rows, vocab, reinterpret_cast<const cuda::SampleRowParams*>(d_in), n,
                    reinterpret_cast<const cuda::PenaltyEntry*>(d_in + params_bytes), work, d_out,
                    stream_);
  DSMATH_CUDA_CHECK(cudaMemcpyAsync(host_out, d_out, out_bytes, cudaMemcpyDeviceToHost, stream_));
  DSMATH_CUDA_CHECK(cudaEventRecord(slot.ended, stream_));
}

std::vector<RowOutcome> DeviceSampler::collect() {
  Slot& slot = slots_[oldest_];
  DSMATH_CHECK(slot.busy, "sampling on the GPU: collect without a launch");
  oldest_ = 1 - oldest_;
  slot.busy = false;
  last_seconds_ = slot.host_seconds;
  if (slot.rows.params.empty()) return std::move(slot.out);
  DSMATH_CUDA_CHECK(cudaSetDevice(device_));
  DSMATH_CUDA_CHECK(cudaEventSynchronize(slot.ended));
  float gpu_ms = 0;
  DSMATH_CUDA_CHECK(cudaEventElapsedTime(&gpu_ms, slot.began, slot.ended));
  const auto read_started = std::chrono::steady_clock::now();
  read_device_outcomes(slot.rows, static_cast<const cuda::SampleRowOutcome*>(slot.pinned_out),
                       slot.vocab, slot.out);
  last_seconds_ += double(gpu_ms) / 1e3 + seconds_since(read_started);
  return std::move(slot.out);
}

std::vector<RowOutcome> DeviceSampler::sample(const LogitsOnDevice& logits,
                                              const std::vector<RowSample>& samples) {
  launch(logits, samples);
  return collect();
}

SampledTokens DeviceSampler::newest_on_device() const {
  DSMATH_CHECK(newest_ >= 0, "sampling on the GPU: nothing launched yet");
  const Slot& slot = slots_[newest_];
  return {slot.outcomes.get(), int64_t(slot.rows.params.size())};
}

int32_t DeviceSampler::newest_outcome_index(size_t sample) const {
  DSMATH_CHECK(newest_ >= 0, "sampling on the GPU: nothing launched yet");
  const Slot& slot = slots_[newest_];
  DSMATH_CHECK(sample < slot.outcome_of.size(), "sampling on the GPU: sample ", sample,
               " of a step that drew ", slot.outcome_of.size());
  return slot.outcome_of[sample];
}

}  // namespace dsmath
