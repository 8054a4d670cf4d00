// Drives one worker group. The driver (rank 0) launches steps: the plan is broadcast over the
// control-plane communicator and every rank runs its part of the forward; followers sit in
// follow() until the driver calls shutdown() (also done by the destructor on the driver).
// Between plans a follower spins (a busy group's next plan comes within milliseconds) unless
// the driver said it is idle (notify_idle): then it sleeps between polls.
//
// The rank that holds a step's logits (LlamaModel::logits_holder) samples them when the plan
// carries sampling instructions (row_sample.h): the driver itself at pp 1, the last pipeline
// stage otherwise, which sends only the outcomes to the driver. On the CUDA backend that rank
// samples on the GPU (DeviceSampler) as soon as its part of the step has run: the logits never
// leave the device, only the outcomes. Up to pp steps can be in flight through the stages
// (launch ... launch, then finish the oldest).
//
// The engine's overlap (engine.h) launches a plan that names the previous step's tokens by
// placeholder before finishing that step: on one GPU the device fills them from that step's
// sampling outcomes, still there, so nothing waits; otherwise the host fills them first.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "worker/comm/communicator.h"
#include "worker/engine/row_sample.h"
#include "worker/model/llama.h"

namespace dsmath {

class DeviceSampler;

class ModelRunner {
 public:
  ModelRunner(LlamaModel& model, Communicator& control);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  LlamaModel& model() { return model_; }
  // Whether a step has been sampled on the GPU here (DeviceSampler).
  bool sampled_on_gpu() const { return device_sampler_ != nullptr; }
  bool is_driver() const { return control_.topology().is_driver(); }

  struct StepResult {
    std::vector<float> logits;        // [rows, vocab] for a plan without sampling instructions
    std::vector<RowOutcome> samples;  // or one outcome per RowSample of the plan, in order
    double sample_seconds = 0;        // the driver's own sampling time (pp 1)
  };
  // Driver only: launch(plan) then finish().
  StepResult step(const StepPlan& plan);
  // Driver only: runs `plan` on every rank without waiting for the later pipeline stages. Its
  // token placeholders (step_plan.h) are the samples of the step launched just before it.
  void launch(const StepPlan& plan);
  // Driver only: the result of the oldest launched step, once it is back.
  StepResult finish();
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
  // Whether this rank samples `plan` on the GPU: it has sampling instructions and the model
  // runs on the CUDA backend.
  bool samples_on_device(const StepPlan& plan) const;
  // Runs this rank's part of `plan` (its placeholders filled from `sampled` on the device),
  // leaving the logits there, and launches their sampling when they are here: false on the
  // other ranks. collect_device_samples() waits for the oldest launched.
  bool launch_sampling_on_device(const StepPlan& plan, SampledTokens sampled = {});
  StepResult collect_device_samples();
  // Replaces the plan's token placeholders by the previous step's sampled tokens: on one GPU by
  // their places among its sampling outcomes there (returned, for the device to fill them),
  // otherwise by the tokens themselves, sampling or collecting that step now.
  SampledTokens fill_token_placeholders(StepPlan& plan);

  std::unique_ptr<DeviceSampler> device_sampler_;  // made at the first step that needs it
  struct Pending {                                 // a launched step, on the driver
    StepPlan plan;                                 // its sampling instructions
    std::vector<float> logits;                     // here already (pp 1): sampled in finish()
    std::optional<StepResult> sampled;             // or sampled already
    bool sampled_on_device = false;                // or being sampled on the GPU (pp 1)
    std::optional<uint64_t> ticket;  // or its outcomes (or logits) on their way from the last stage
  };
  std::deque<Pending> pending_;
};

}  // namespace dsmath
