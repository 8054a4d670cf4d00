// Drives one tensor-parallel group. The driver (rank 0) calls step(): the plan is broadcast
// over the control-plane communicator and every rank runs the same forward; followers sit in
// follow() until the driver calls shutdown() (also done by the destructor on the driver).
// Between plans a follower spins (a busy group's next plan comes within milliseconds) unless
// the driver said it is idle (notify_idle): then it sleeps between polls.
#pragma once

#include <vector>

#include "worker/comm/communicator.h"
#include "worker/model/llama.h"

namespace dsmath {

class ModelRunner {
 public:
  ModelRunner(LlamaModel& model, Communicator& control);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  LlamaModel& model() { return model_; }
  bool is_driver() const { return control_.topology().is_driver(); }

  // Driver only: runs `plan` on every rank and returns the gathered logits.
  std::vector<float> step(const StepPlan& plan);
  // Driver only: step() in two halves (LlamaModel::launch / finish), so that up to pp steps
  // are in flight through the pipeline stages; finish returns the oldest launched step's logits.
  void launch(const StepPlan& plan);
  std::vector<float> finish();
  // Followers only: runs the driver's plans until it shuts the group down.
  void follow();
  // Driver only: tells the followers that no step comes soon, so they wait sleeping rather
  // than spinning. Sent once per idle spell; the next step() ends it.
  void notify_idle();
  // Driver only: releases the followers. Idempotent.
  void shutdown();

 private:
  LlamaModel& model_;
  Communicator& control_;
  bool shut_down_ = false;
  bool idle_sent_ = false;
};

}  // namespace dsmath
