#include "worker/engine/model_runner.h"

#include <chrono>

#include "common/core/error.h"

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

std::vector<float> ModelRunner::step(const StepPlan& plan) {
  launch(plan);
  return finish();
}

void ModelRunner::launch(const StepPlan& plan) {
  DSMATH_CHECK(is_driver(), "ModelRunner::launch runs on the driver (rank 0) only");
  idle_sent_ = false;
  if (control_.topology().world_size > 1) send_plan(control_, plan);
  model_.launch(plan);
}

std::vector<float> ModelRunner::finish() {
  DSMATH_CHECK(is_driver(), "ModelRunner::finish runs on the driver (rank 0) only");
  return model_.finish();
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
    if (!idle) model_.launch(plan);  // a follower has no logits to wait for
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
