// The engine: one long-lived continuous-batching loop per model replica, on rank 0 (the driver).
// `dsmath-worker generate`, `batch` and `serve` all drive this one; none schedules by itself.
//
//   add(request)   any thread: queued, taken in at the start of the next step
//   cancel(key)    any thread: the request's samples and blocks are freed before the next step
//   stop(key, i)   any thread: sample i ends with finish reason `stop` (the caller, which holds
//                  the text, found a stop string)
//   step()         the driver's thread only: takes in what was queued, schedules, runs one
//                  forward on every rank (ModelRunner), samples, and returns the step's events
//
// With micro_batches = P > 1, step() first launches steps until P are in flight (each over
// sequences that no other in-flight step holds, about 1/P of them), then waits for the oldest
// and samples it. A sample cancelled or stopped while its step is in flight ends at once; the
// step's result for it is dropped when it comes back.
//
// With overlap (for a GPU, where the host would otherwise sit idle while a step runs and the
// GPU while the host plans the next), step() launches step k+1 before step k's tokens are back:
// every sequence that samples in step k and cannot end by length there decodes a placeholder
// for that token in step k+1, which the device fills from step k's sampled ids (ModelRunner),
// and a prompt chunked over steps gets its next chunk.
// When step k's token turns out to end the sequence (EOS, a stop token, an error, a stop or
// cancel meanwhile), its row of step k+1 is dropped: no extra token is ever emitted, and every
// sample is the one the engine without overlap makes. Requests with penalties do not run ahead
// (their logits need the token itself on the host).
//
// Nothing a request carries can stop the group: an invalid request, or one whose logits turn
// NaN, ends alone with an `error` event. MPI stays on the step() thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "worker/engine/block_manager.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/scheduler.h"
#include "worker/engine/sequence.h"

namespace dsmath {

struct EngineConfig {
  int32_t max_step_tokens = 512;  // tokens per forward (benchmarks/engine_bench chose it)
  int32_t max_running = 256;      // running sequences; capped at max_step_tokens
  int32_t max_samples = 1024;     // largest n per request
  bool prefix_caching = true;
  std::vector<int32_t> eos_token_ids;  // end a sample unless ignore_eos
  // Steps in flight at once, each over its own sequences: the pipeline's stage count keeps
  // every stage busy (stage s on micro-batch k while stage s + 1 is on k - 1). 1: one at a time.
  int32_t micro_batches = 1;
  // Launch step k+1 before step k's tokens are back (see above); needs micro_batches = 1.
  bool overlap = false;
};

struct EngineRequest {
  std::string key;  // unique among live requests
  std::vector<int32_t> prompt;
  SamplingParams params;  // seed, max_new_tokens, stop_token_ids, logprobs, ... (validated)
  int32_t n = 1;
  // Keys the samples' random streams (with the seed, sample index and step); unset: the key.
  // A server sets it so that a seed alone decides the samples, whatever the request's key.
  std::optional<std::string> rng_key = std::nullopt;
  // Sample i draws from the random stream of sample first_sample + i (events still say i): a
  // resumed batch job runs samples 5..7 of a problem exactly as an uninterrupted one would.
  uint64_t first_sample = 0;
};

struct EngineEvent {
  EngineEvent() = default;
  EngineEvent(std::string key, int32_t sample_index)
      : key(std::move(key)), sample_index(sample_index) {}

  std::string key;
  int32_t sample_index = 0;           // -1: the request was refused as a whole
  std::optional<SampledToken> token;  // the sample's new token, if it made one this step
  FinishReason finish = FinishReason::kNone;
  std::string error;  // a sentence, with kError
  // On a sample's finishing event:
  int32_t prompt_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // of those, taken from the prefix cache
  int32_t completion_tokens = 0;
};

struct EngineStats {
  int64_t queued = 0;       // samples waiting (new or preempted)
  int64_t running = 0;      // samples holding KV blocks
  int64_t preempted = 0;    // waiting after a preemption, now
  int64_t preemptions = 0;  // since start
  int64_t live_requests = 0;
  int32_t kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_cached = 0;  // cached: unreferenced
  int64_t prefix_cache_hit_tokens = 0;  // prompt tokens taken from the cache instead of computed
  int64_t prompt_tokens = 0;            // of requests taken in
  int64_t prefill_tokens = 0;           // run through the forward to fill the cache
  int64_t generated_tokens = 0;
  int64_t ahead_tokens = 0;   // overlap: decoded before the token before them was back
  int64_t dropped_ahead = 0;  // of those, dropped: the sample had ended meanwhile
  int64_t steps = 0;
  double step_seconds = 0, forward_seconds = 0;  // forward: ModelRunner launch + finish calls
  double sample_seconds = 0;                     // sampling the step's logits rows
};

class Engine {
 public:
  Engine(ModelRunner& runner, EngineConfig config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void add(EngineRequest request);
  void cancel(const std::string& key);
  void stop(const std::string& key, int32_t sample_index);

  // Driver thread only. Returns no events and runs no forward when there is nothing to do.
  std::vector<EngineEvent> step();
  // Driver thread: whether requests are live or commands queued.
  bool has_work();
  // Driver thread: blocks (without spinning) until has_work() or the timeout; when idle, first
  // tells the followers (ModelRunner::notify_idle) so they sleep as well.
  bool wait_for_work(std::chrono::milliseconds timeout);

  EngineStats stats() const;  // any thread: as of the end of the last step
  const EngineConfig& config() const { return config_; }

 private:
  struct Stop {
    std::string key;
    int32_t sample_index;  // -1: every sample (cancel)
    FinishReason reason;
  };
  using Command = std::variant<EngineRequest, Stop>;
  struct LiveRequest {
    std::shared_ptr<Request> request;
    std::vector<std::unique_ptr<Sequence>> samples;
    int32_t unfinished = 0;
  };

  void take_in(EngineRequest& r, std::vector<EngineEvent>& events);
  void apply(const Stop& s, std::vector<EngineEvent>& events);
  void check(const EngineRequest& r) const;  // throws Error naming the field
  // Ends a sample: frees its blocks and adds (or completes) its event.
  void finish(Sequence& s, FinishReason reason, std::string error, EngineEvent& event);
  EngineEvent finish_event(Sequence& s, FinishReason reason, std::string error);
  struct InFlightChunk {
    Sequence* sequence;
    int32_t tokens;         // computed by the step, from where the sequence was at launch
    bool samples;           // its last token's logits are sampled
    bool decode;            // one generated token (else prompt or recompute: prefill)
    bool ahead;             // its token is a placeholder for the one of the step before
    bool advanced = false;  // counted as computed already: the next step runs ahead of it
    int32_t sample = -1;    // the index of its own RowSample in the step, when it samples
  };
  struct InFlight {  // a launched step, until its sampled tokens come back
    std::vector<InFlightChunk> chunks;
    std::vector<Sequence*> sampled;  // per RowSample of the plan: who takes that token
  };
  bool launch_step();  // schedules and launches one step; false when nothing can run
  // Overlap: the sequences of the newest step in flight that may decode their next token before
  // it is back get a placeholder for it.
  void run_ahead(InFlight& newest);
  bool can_run_ahead(const Sequence& s, bool samples) const;
  void finish_step(std::vector<EngineEvent>& events);  // the oldest in flight
  // Appends `outcome` to the sample (or ends it with the outcome's error), and ends it when
  // the token is an end: EOS, a stop token, max_new_tokens or the context.
  void accept(Sequence& s, RowOutcome outcome, std::vector<EngineEvent>& events);
  void publish_stats();

  ModelRunner& runner_;
  EngineConfig config_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::map<std::string, LiveRequest> live_;
  std::deque<InFlight> in_flight_;
  // Samples of requests that ended while a step in flight still holds them.
  std::vector<std::unique_ptr<Sequence>> retired_;
  uint64_t arrivals_ = 0;
  EngineStats counters_;  // driver thread

  mutable std::mutex mutex_;  // guards commands_ and published_
  std::condition_variable wake_;
  std::vector<Command> commands_;
  EngineStats published_;
};

}  // namespace dsmath
