#include "worker/engine/model_runner.h"

#include "common/core/error.h"

namespace dsmath {

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
  DSMATH_CHECK(is_driver(), "ModelRunner::step runs on the driver (rank 0) only");
  if (control_.topology().world_size > 1) {
    std::vector<int32_t> words = plan.serialize();
    broadcast_vector(control_, words, 0);
  }
  return model_.forward(plan);
}

void ModelRunner::follow() {
  DSMATH_CHECK(!is_driver(), "ModelRunner::follow runs on ranks other than 0");
  for (;;) {
    std::vector<int32_t> words;
    broadcast_vector(control_, words, 0);
    const StepPlan plan = StepPlan::deserialize(words);
    if (plan.shutdown) return;
    model_.forward(plan);
  }
}

void ModelRunner::shutdown() {
  if (shut_down_ || !is_driver()) return;
  shut_down_ = true;
  if (control_.topology().world_size > 1) {
    StepPlan plan;
    plan.shutdown = true;
    std::vector<int32_t> words = plan.serialize();
    broadcast_vector(control_, words, 0);
  }
}

}  // namespace dsmath
