// A GenerateRequest checked and turned into what a worker group runs: prompt token ids,
// sampling parameters (unset fields from generation_config.json), n, stop strings. Every
// refusal is a gRPC status with a sentence naming the field, raised before any token is sent.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <string>
#include <vector>

#include "coordinator/served_model.h"
#include "proto/dsmath.pb.h"
#include "worker/engine/sampler.h"

namespace dsmath {

struct RequestPlan {
  std::string request_id;  // the client's, or one the server made
  std::vector<int32_t> prompt;
  SamplingParams params;  // seed always set (drawn by the server when the request had none)
  int32_t n = 1;
  std::vector<std::string> stop;
  // What keys the samples' random streams: "" for interactive requests (the seed alone
  // decides); a batch job's problem id, with the run's first sample index.
  std::string rng_key;
  uint64_t first_sample = 0;
};

struct RequestError {
  grpc::StatusCode code;
  std::string message;
  grpc::Status status() const { return {code, message}; }
};

// Throws RequestError (INVALID_ARGUMENT) naming the field at fault.
RequestPlan plan_request(const v1::GenerateRequest& request, const ServedModel& model,
                         const ServerLimits& limits);

// Prompt ids of a Tokenize request (the same rendering as Generate). Throws RequestError.
std::vector<int32_t> tokenize_request(const v1::TokenizeRequest& request, const ServedModel& model);

}  // namespace dsmath
