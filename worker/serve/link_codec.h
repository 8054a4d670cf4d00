// Conversions between the engine's types and the worker link's messages (proto/worker.proto),
// used by both ends: the worker's serve loop and the coordinator's group links.
#pragma once

#include "common/jobs/batch_job.h"
#include "proto/worker.pb.h"
#include "worker/engine/engine.h"

namespace dsmath {

// Version 1: the first. A worker and a coordinator of different versions refuse each other.
constexpr uint32_t kWorkerLinkVersion = 1;

worker::v1::Sampling to_proto(const SamplingParams& params);
SamplingParams from_proto(const worker::v1::Sampling& sampling);

worker::v1::Finish to_proto(FinishReason reason);
FinishReason from_proto(worker::v1::Finish finish);

void to_proto(const EngineEvent& event, worker::v1::TokenEvent* out);
void to_proto(const EngineStats& stats, worker::v1::EngineStats* out);

// A batch job's sampling as the engine takes it (logprobs on: samples report their cumulative
// logprob), for both drivers of common/jobs/BatchJob: the offline worker and the coordinator.
SamplingParams sampling_params(const JobSampling& sampling);

}  // namespace dsmath
