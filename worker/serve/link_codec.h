// Conversions between the engine's types and the worker link's messages (proto/worker.proto),
// used by both ends: the worker's serve loop and the coordinator's group links.
#pragma once

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

}  // namespace dsmath
