// Sampling on the GPU that holds the logits (kernels/cuda/sampling.*). When the model runs on
// the CUDA backend, ModelRunner hands the step's logits, still in device memory, and the plan's
// RowSamples here instead of copying 400 KB of f32 per row (7B) to the host: the host prepares
// each row's parameters (its Philox uniform from the same key as the CPU's sample_token, and
// the tokens a penalty touches), one copy takes them to the device from a pinned buffer, one
// kernel samples every row (a block per row), and one copy brings the outcomes back (token,
// logprob, top logprobs, or the row's error). The tokens are the CPU's wherever no probability,
// mass or draw falls within float rounding of a boundary (sampling.cu says how close). launch
// and collect are apart so that the host can plan the next step while this one runs; the
// outcomes stay on the device for that step's token placeholders. Built only with CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include "kernels/cuda/device_allocator.h"
#include "kernels/cuda/sampling.h"
#include "worker/engine/row_sample.h"
#include "worker/model/llama.h"

namespace dsmath {

// The host's halves of DeviceSampler::sample (apart for tests): each row's parameters and
// penalty entries (a sample whose row is outside the step gets its error in `out` at once), then
// the outcomes read back into `out`.
struct DeviceRows {
  std::vector<cuda::SampleRowParams> params;
  std::vector<cuda::PenaltyEntry> penalties;
  std::vector<size_t> sample_of;  // the sample each row is
  int64_t work_rows = 0;          // vocab-wide work rows the kernel needs
};
DeviceRows prepare_device_rows(const std::vector<RowSample>& samples, int64_t rows, int64_t vocab,
                               std::vector<RowOutcome>& out);
void read_device_outcomes(const DeviceRows& rows, const cuda::SampleRowOutcome* outcomes,
                          int64_t vocab, std::vector<RowOutcome>& out);

class DeviceSampler {
 public:
  // Works on `stream` of `device` (the CUDA backend's), where the logits are written.
  DeviceSampler(int device, cudaStream_t stream);
  ~DeviceSampler();
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;

  // Enqueues the sampling of `samples` from `logits` on the stream and returns at once; at most
  // two are in flight (the engine's overlap: step k+1 launched before step k is collected).
  void launch(const LogitsOnDevice& logits, const std::vector<RowSample>& samples);
  // The oldest launched sampling's outcomes, one per sample in order, as sample_rows would give
  // on the host copy of its logits. Waits for them.
  std::vector<RowOutcome> collect();
  // launch, then collect.
  std::vector<RowOutcome> sample(const LogitsOnDevice& logits,
                                 const std::vector<RowSample>& samples);
  // The newest launched sampling's outcomes on the device (for the next step's placeholders,
  // valid until the launch after next), and where sample i's outcome is among them: -1 when
  // it drew no row (its error is known on the host).
  SampledTokens newest_on_device() const;
  int32_t newest_outcome_index(size_t sample) const;
  // The last collect()'s own time: the host's work and the GPU's from the first copy to the
  // last, without the wait for the forward still running before it.
  double last_seconds() const { return last_seconds_; }

 private:
  // What one sampling in flight holds until collected: two take turns.
  struct Slot {
    void* pinned_in = nullptr;  // the rows' parameters, then the penalty entries
    size_t pinned_in_bytes = 0;
    void* pinned_out = nullptr;  // the outcomes
    size_t pinned_out_bytes = 0;
    std::shared_ptr<void> inputs, outcomes;
    size_t inputs_bytes = 0, outcomes_bytes = 0;
    cudaEvent_t began = nullptr, ended = nullptr;  // around the GPU's part
    bool busy = false;                             // launched, not collected
    DeviceRows rows;
    std::vector<int32_t> outcome_of;  // per sample: its index among the outcomes, or -1
    std::vector<RowOutcome> out;      // prefilled with the errors found on the host
    int64_t vocab = 0;
    double host_seconds = 0;
  };
  // A pinned host buffer of at least `bytes`.
  static void* pinned(void*& buffer, size_t& capacity, size_t bytes);
  // A device buffer of at least `bytes`.
  void* on_device(std::shared_ptr<void>& buffer, size_t& capacity, size_t bytes);

  int device_;
  cudaStream_t stream_;
  cuda::DeviceAllocator allocator_;
  Slot slots_[2];
  int next_ = 0;     // the slot the next launch takes
  int oldest_ = 0;   // the slot the next collect reads
  int newest_ = -1;  // the last launched
  // Used by one kernel at a time, in stream order: shared by the slots.
  std::shared_ptr<void> work_, assembled_;
  size_t work_bytes_ = 0, assembled_bytes_ = 0;
  double last_seconds_ = 0;
};

}  // namespace dsmath
