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

bool ModelRunner::launch_sampling_on_device(const StepPlan& plan, SampledTokens sampled) {
#if DSMATH_HAVE_CUDA_BACKEND
  const LogitsOnDevice logits = model_.launch_on_device(plan, sampled);
  if (logits.rows == 0) return false;
  if (device_sampler_ == nullptr) {
    auto& cuda = static_cast<CudaBackend&>(model_.backend());
    device_sampler_ = std::make_unique<DeviceSampler>(cuda.gpu(), cuda.stream());
  }
  device_sampler_->launch(logits, decode_row_samples(plan.sampling));
  return true;
#else
  (void)plan;
  (void)sampled;
  fail("a ", device_name(model_.backend().device()), " backend in a build without CUDA");
#endif
}

ModelRunner::StepResult ModelRunner::collect_device_samples() {
  StepResult result;
#if DSMATH_HAVE_CUDA_BACKEND
  result.samples = device_sampler_->collect();
  // Its own time: the forward still running on the GPU when it began is the forward's.
  result.sample_seconds = device_sampler_->last_seconds();
#endif
  return result;
}

ModelRunner::StepResult ModelRunner::step(const StepPlan& plan) {
  launch(plan);
  return finish();
}

static bool has_token_placeholders(const StepPlan& plan) {
  for (const StepSequence& s : plan.sequences)
    for (int32_t t : s.tokens)
      if (is_token_placeholder(t)) return true;
  return false;
}

SampledTokens ModelRunner::fill_token_placeholders(StepPlan& plan) {
  DSMATH_CHECK(pending_.size() == 1, "a step plan names the tokens of the step before it, with ",
               pending_.size(), " steps in flight instead of that one");
  Pending& previous = pending_.back();
  DSMATH_CHECK(!previous.ticket,
               "a step plan names the tokens of a step still in later pipeline stages (overlap "
               "needs --pp 1)");
#if DSMATH_HAVE_CUDA_BACKEND
  // One GPU: the tokens stay there, and the device fills the placeholders from the previous
  // step's outcomes (sampled before this step, in stream order). With tp > 1 every rank needs
  // them, and each step's collectives are waited for anyway: the host fills them.
  if (previous.sampled_on_device && control_.topology().world_size == 1 &&
      samples_on_device(plan)) {
    for (StepSequence& s : plan.sequences)
      for (int32_t& t : s.tokens) {
        if (!is_token_placeholder(t)) continue;
        const int32_t outcome =
            device_sampler_->newest_outcome_index(size_t(placeholder_sample(t)));
        // A sample that drew no row ends with its error; its next row computes token 0 and is
        // dropped.
        t = outcome < 0 ? 0 : token_placeholder(outcome);
      }
    return device_sampler_->newest_on_device();
  }
#endif
  if (previous.sampled_on_device) {  // collected now rather than in its finish()
    previous.sampled = collect_device_samples();
    previous.sampled_on_device = false;
  } else if (!previous.sampled) {  // sampled now rather than in its finish()
    previous.sampled =
        resolve_step(previous.plan, std::move(previous.logits), size_t(model_.config().vocab_size));
  }
  const std::vector<RowOutcome>& outcomes = previous.sampled->samples;
  for (StepSequence& s : plan.sequences)
    for (int32_t& t : s.tokens) {
      if (!is_token_placeholder(t)) continue;
      const size_t sample = size_t(placeholder_sample(t));
      DSMATH_CHECK(sample < outcomes.size(), "a step plan names sample ", sample,
                   " of a step that drew ", outcomes.size());
      // A sample whose row failed ends with its error when its step is finished; its next row
      // computes token 0 and is dropped.
      t = outcomes[sample].error.empty() ? outcomes[sample].token.token : 0;
    }
  return {};
}

void ModelRunner::launch(const StepPlan& given) {
  DSMATH_CHECK(is_driver(), "ModelRunner::launch runs on the driver (rank 0) only");
  idle_sent_ = false;
  // The engine ran ahead: its plan names tokens the previous step samples.
  std::optional<StepPlan> filled;
  SampledTokens from_device;
  if (has_token_placeholders(given)) from_device = fill_token_placeholders(filled.emplace(given));
  const StepPlan& plan = filled ? *filled : given;
  if (control_.topology().world_size > 1) send_plan(control_, plan);
  // On the GPU the logits are sampled there (collected in finish()); the next launch reuses
  // their buffer, after the sampling in stream order.
  std::vector<float> logits;
  bool sampled_on_device = false;
  if (samples_on_device(plan))
    sampled_on_device = launch_sampling_on_device(plan, from_device);
  else
    logits = model_.launch(plan);
  Pending pending;
  pending.plan.sampling = plan.sampling;
  if (model_.logits_holder()) {
    pending.logits = std::move(logits);
    pending.sampled_on_device = sampled_on_device;
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
  if (p.sampled_on_device) return collect_device_samples();
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
      if (launch_sampling_on_device(plan))
        model_.stage().links->send_async(encode_outcomes(collect_device_samples().samples), 0);
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
