#include "worker/engine/model_runner.h"

#include <chrono>
#include <cstring>

#include "common/core/error.h"
#if DSMATH_HAVE_CUDA_BACKEND
#include "worker/engine/device_sampler.h"
#include "worker/model/cuda_backend.h"
#else
namespace dsmath {
class DeviceSampler {};  // never made without CUDA; complete for ModelRunner's unique_ptr
}  // namespace dsmath
#endif

namespace dsmath {

namespace {

// How long a follower spins for the next plan of a busy group before it sleeps between polls:
// longer than the driver's sampling and scheduling between two steps.
constexpr std::chrono::microseconds kBusySpin(50000);

// A plan travels as its length, through await_broadcast (followers of an idle group wait there
// without spinning), then its words. The driver does not wait for the words to arrive: under
// pipeline parallelism the later stages are still busy with earlier micro-batches.
void send_plan(Communicator& control, const StepPlan& plan) {
  std::vector<int32_t> words = plan.serialize();
  uint64_t size = words.size();
  control.await_broadcast(&size, sizeof(size), 0, kBusySpin);
  control.broadcast_nowait(words.data(), words.size() * sizeof(int32_t), 0);
}

StepPlan receive_plan(Communicator& control, std::chrono::microseconds spin) {
  uint64_t size = 0;
  control.await_broadcast(&size, sizeof(size), 0, spin);
  DSMATH_CHECK(size > 0 && size < (uint64_t(1) << 31), "step plan of ", size, " words");
  std::vector<int32_t> words(size);
  control.broadcast_nowait(words.data(), words.size() * sizeof(int32_t), 0);
  return StepPlan::deserialize(words);
}

}  // namespace

ModelRunner::ModelRunner(LlamaModel& model, Communicator& control)
    : model_(model), control_(control) {}

ModelRunner::~ModelRunner() {
  if (!is_driver() || shut_down_) return;
  try {
    shutdown();
  } catch (const Error&) {
    // The group is already broken; nothing more can be told to the followers.
  }
}

// What the holder of a step's logits makes of them: its samples' outcomes when the plan has
// sampling instructions, else the logits themselves.
static ModelRunner::StepResult resolve_step(const StepPlan& plan, std::vector<float> logits,
                                            size_t vocab) {
  ModelRunner::StepResult result;
  if (plan.sampling.empty()) {
    result.logits = std::move(logits);
    return result;
  }
  const auto started = std::chrono::steady_clock::now();
  result.samples = sample_rows(logits, vocab, decode_row_samples(plan.sampling));
  result.sample_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

bool ModelRunner::samples_on_device(const StepPlan& plan) const {
  return !plan.sampling.empty() && model_.backend().device() == Device::kCuda;
}

std::optional<ModelRunner::StepResult> ModelRunner::launch_sampling_on_device(
    const StepPlan& plan) {
#if DSMATH_HAVE_CUDA_BACKEND
  const LogitsOnDevice logits = model_.launch_on_device(plan);
  if (logits.rows == 0) return std::nullopt;
  if (device_sampler_ == nullptr) {
    auto& cuda = static_cast<CudaBackend&>(model_.backend());
    device_sampler_ = std::make_unique<DeviceSampler>(cuda.gpu(), cuda.stream());
  }
  StepResult result;
  result.samples = device_sampler_->sample(logits, decode_row_samples(plan.sampling));
  // Its own time: the forward still running on the GPU when it began is the forward's.
  result.sample_seconds = device_sampler_->last_seconds();
  return result;
#else
  (void)plan;
  fail("a ", device_name(model_.backend().device()), " backend in a build without CUDA");
#endif
}

ModelRunner::StepResult ModelRunner::step(const StepPlan& plan) {
  launch(plan);
  return finish();
}

void ModelRunner::launch(const StepPlan& plan) {
  DSMATH_CHECK(is_driver(), "ModelRunner::launch runs on the driver (rank 0) only");
  idle_sent_ = false;
  if (control_.topology().world_size > 1) send_plan(control_, plan);
  // On the GPU the logits are sampled at once: the next launch reuses their buffer.
  std::vector<float> logits;
  std::optional<StepResult> sampled;
  if (samples_on_device(plan))
    sampled = launch_sampling_on_device(plan);
  else
    logits = model_.launch(plan);
  Pending pending;
  pending.plan.sampling = plan.sampling;
  if (model_.logits_holder()) {
    pending.logits = std::move(logits);
    pending.sampled = std::move(sampled);
  } else if (const int64_t rows = LlamaModel::logit_rows(plan); rows > 0) {
    // pp > 1: the last stage's tp rank 0 sends the outcomes (or logits) when it gets there.
    const size_t bytes = plan.sampling.empty()
                             ? size_t(rows * model_.config().vocab_size) * sizeof(float)
                             : max_outcome_bytes(decode_row_samples(plan.sampling));
    const PipelineStage& stage = model_.stage();
    pending.ticket = stage.links->recv_async(bytes, stage.logits_rank());
  }
  pending_.push_back(std::move(pending));
}

ModelRunner::StepResult ModelRunner::finish() {
  DSMATH_CHECK(is_driver(), "ModelRunner::finish runs on the driver (rank 0) only");
  DSMATH_CHECK(!pending_.empty(), "ModelRunner::finish without a launched step");
  Pending p = std::move(pending_.front());
  pending_.pop_front();
  if (p.sampled) return std::move(*p.sampled);
  if (!p.ticket)
    return resolve_step(p.plan, std::move(p.logits), size_t(model_.config().vocab_size));
  const std::vector<char> bytes = model_.stage().links->wait_recv(*p.ticket);
  StepResult result;
  if (!p.plan.sampling.empty()) {
    result.samples = decode_outcomes(bytes);
  } else {
    result.logits.resize(bytes.size() / sizeof(float));
    std::memcpy(result.logits.data(), bytes.data(), result.logits.size() * sizeof(float));
  }
  return result;
}

void ModelRunner::notify_idle() {
  DSMATH_CHECK(is_driver(), "ModelRunner::notify_idle runs on the driver (rank 0) only");
  if (idle_sent_ || shut_down_) return;
  idle_sent_ = true;
  if (control_.topology().world_size > 1) {
    StepPlan plan;
    plan.idle = true;
    send_plan(control_, plan);
  }
}

void ModelRunner::follow() {
  DSMATH_CHECK(!is_driver(), "ModelRunner::follow runs on ranks other than 0");
  bool idle = false;
  for (;;) {
    const StepPlan plan = receive_plan(control_, idle ? std::chrono::microseconds(0) : kBusySpin);
    if (plan.shutdown) return;
    idle = plan.idle;
    if (idle) continue;
    if (samples_on_device(plan)) {
      // The last stage's tp rank 0 (pp > 1) samples on its GPU and sends the outcomes.
      std::optional<StepResult> sampled = launch_sampling_on_device(plan);
      if (sampled) model_.stage().links->send_async(encode_outcomes(sampled->samples), 0);
      continue;
    }
    std::vector<float> logits = model_.launch(plan);
    if (logits.empty()) continue;
    // The last stage's tp rank 0 (pp > 1): its samples' outcomes, or the logits, to the driver.
    StepResult result = resolve_step(plan, std::move(logits), size_t(model_.config().vocab_size));
    std::vector<char> bytes;
    if (plan.sampling.empty()) {
      bytes.resize(result.logits.size() * sizeof(float));
      std::memcpy(bytes.data(), result.logits.data(), bytes.size());
    } else {
      bytes = encode_outcomes(result.samples);
    }
    model_.stage().links->send_async(std::move(bytes), 0);
  }
}

void ModelRunner::shutdown() {
  if (shut_down_ || !is_driver()) return;
  shut_down_ = true;
  if (control_.topology().world_size > 1) {
    StepPlan plan;
    plan.shutdown = true;
    send_plan(control_, plan);
  }
}

}  // namespace dsmath
