// One request as the coordinator sees it while a worker group runs it: the samples' text
// (incremental detokenization, stop strings), token ids and logprobs, and the messages that
// go back to the client. Pure logic, no gRPC calls: the router feeds it a step's events and
// sends what it returns.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include "common/text/text_stream.h"
#include "coordinator/request_plan.h"
#include "proto/dsmath.pb.h"
#include "proto/worker.pb.h"

namespace dsmath {

using Clock = std::chrono::steady_clock;

class ServedRequest {
 public:
  ServedRequest(RequestPlan plan, const ServedModel& model, bool streaming,
                Clock::time_point arrival);

  // What one step's events changed.
  struct Update {
    std::optional<v1::GenerateStreamResponse> message;  // streaming: the deltas, if any
    std::vector<int32_t> stop_samples;  // a stop string matched: end these on the worker
    int32_t new_tokens = 0;
    std::optional<double> time_to_first_token;  // seconds, on the request's first token
    std::vector<double> inter_token_seconds;    // one per token after a sample's first
    bool finished = false;                      // every sample is done (or the request failed)
    grpc::Status status;                        // when finished
  };

  // This request's events of one step, in order. Throws RequestError for an event that
  // cannot belong to it (a sample index out of range): the worker sent nonsense.
  Update apply(std::span<const worker::v1::TokenEvent* const> events, Clock::time_point now);
  // Abort: every unfinished sample ends "cancelled"; the request completes OK.
  Update cancel(Clock::time_point now);

  v1::GenerateResponse response(Clock::time_point now) const;  // unary: the whole result
  const RequestPlan& plan() const { return plan_; }
  bool streaming() const { return streaming_; }
  Clock::time_point arrival() const { return arrival_; }
  bool started() const { return first_token_.has_value(); }  // any token came back
  bool streamed() const { return streamed_; }                // any message went to the client
  // Back to the state before any event, to run again on another group.
  void restart();
  void dispatched(Clock::time_point now) { dispatched_ = now; }

 private:
  struct Sample {
    TextStream text;
    v1::Output output;  // the whole output so far (unary); text and ids accumulate
    std::optional<Clock::time_point> last_token;
    bool done = false;
  };
  // Returns the output delta for a sample, creating it in `message` on first use.
  v1::Output* delta(v1::GenerateStreamResponse& message, std::vector<int>& slot, int32_t index);
  void finish_sample(Sample& s, v1::Output* delta, const std::string& reason);
  void fill_usage_and_timings(v1::Usage* usage, v1::Timings* timings, Clock::time_point now) const;
  // Streaming: the message of this update, when it has outputs or ends the request.
  void close(v1::GenerateStreamResponse& message, Update& u, Clock::time_point now);

  RequestPlan plan_;
  const ServedModel& model_;
  bool streaming_;
  Clock::time_point arrival_, dispatched_;
  std::vector<Sample> samples_;
  int32_t unfinished_ = 0;
  int32_t cached_prompt_tokens_ = 0;
  std::optional<Clock::time_point> first_token_;
  bool streamed_ = false;
};

}  // namespace dsmath
