#include "worker/engine/engine.h"

#include <algorithm>
#include <climits>

#include "common/core/error.h"
#include "worker/engine/rng.h"

namespace dsmath {

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return "";
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStopToken:
      return "stop_token";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Every running sequence needs a token of each decode step, so the running limit never
// exceeds the step budget.
EngineConfig with_running_limit(EngineConfig c) {
  c.max_running = std::min(c.max_running, c.max_step_tokens);
  return c;
}

}  // namespace

Engine::Engine(ModelRunner& runner, EngineConfig config)
    : runner_(runner),
      config_(with_running_limit(std::move(config))),
      blocks_(runner.model().kv_blocks(), runner.model().block_size(), config_.prefix_caching),
      scheduler_(blocks_, {config_.max_step_tokens, config_.max_running}) {
  DSMATH_CHECK(runner.is_driver(), "the engine runs on the driver (rank 0) only");
  DSMATH_CHECK(config_.max_samples >= 1, "the engine's largest n must be at least 1");
  DSMATH_CHECK(config_.micro_batches >= 1, "--micro-batches must be at least 1, got ",
               config_.micro_batches);
  DSMATH_CHECK(!config_.overlap || config_.micro_batches == 1,
               "--overlap runs one step ahead of the last; it needs --micro-batches 1, got ",
               config_.micro_batches);
  publish_stats();
}

Engine::~Engine() {
  // Steps still in flight are collected, so no stage is left sending logits nobody receives.
  for (; !in_flight_.empty(); in_flight_.pop_front()) {
    try {
      runner_.finish();
    } catch (const Error&) {
      break;  // the group is broken; its ranks are stopping anyway
    }
  }
}

void Engine::add(EngineRequest request) {
  std::lock_guard lock(mutex_);
  commands_.push_back(std::move(request));
  wake_.notify_one();
}

void Engine::cancel(const std::string& key) {
  std::lock_guard lock(mutex_);
  commands_.push_back(Stop{key, -1, FinishReason::kCancelled});
  wake_.notify_one();
}

void Engine::stop(const std::string& key, int32_t sample_index) {
  std::lock_guard lock(mutex_);
  commands_.push_back(Stop{key, sample_index, FinishReason::kStop});
  wake_.notify_one();
}

bool Engine::has_work() {
  std::lock_guard lock(mutex_);
  return !commands_.empty() || !live_.empty() || !in_flight_.empty();
}

bool Engine::wait_for_work(std::chrono::milliseconds timeout) {
  if (!has_work()) runner_.notify_idle();  // followers sleep too
  std::unique_lock lock(mutex_);
  return wake_.wait_for(lock, timeout, [&] { return !commands_.empty() || !live_.empty(); });
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  return published_;
}

void Engine::check(const EngineRequest& r) const {
  const ModelConfig& c = runner_.model().config();
  DSMATH_CHECK(!r.key.empty(), "the request key is empty");
  DSMATH_CHECK(!live_.count(r.key), "the request key is already used by a live request");
  // All samples of a request run together after its prefill, so n cannot exceed the seats.
  const int32_t max_n = std::min(config_.max_samples, config_.max_running);
  DSMATH_CHECK(r.n >= 1 && r.n <= max_n, "n must be in [1, ", max_n, "], got ", r.n,
               " (the engine runs at most ", config_.max_running, " sequences at once)");
  r.params.validate();
  const int64_t prompt_len = int64_t(r.prompt.size());
  DSMATH_CHECK(prompt_len > 0, "the prompt has no tokens");
  DSMATH_CHECK(prompt_len < c.max_position_embeddings, "the prompt has ", prompt_len,
               " tokens, the model's context (max_position_embeddings) is ",
               c.max_position_embeddings);
  for (size_t i = 0; i < r.prompt.size(); ++i)
    DSMATH_CHECK(r.prompt[i] >= 0 && r.prompt[i] < c.vocab_size, "prompt token ", i, " (id ",
                 r.prompt[i], ") is outside the vocabulary of ", c.vocab_size);
  const int64_t capacity =
      prompt_len + std::min(r.params.max_new_tokens, c.max_position_embeddings - prompt_len);
  const int64_t blocks = (capacity + blocks_.block_size() - 1) / blocks_.block_size();
  DSMATH_CHECK(blocks <= blocks_.num_blocks(), "prompt + max_new_tokens needs ", blocks,
               " KV blocks, the cache has ", blocks_.num_blocks(),
               "; lower max_new_tokens or give the KV cache more memory");
}

void Engine::take_in(EngineRequest& r, std::vector<EngineEvent>& events) {
  try {
    check(r);
  } catch (const Error& e) {
    EngineEvent refused{r.key, -1};
    refused.finish = FinishReason::kError;
    refused.error = cat("request '", r.key, "': ", e.what());
    events.push_back(std::move(refused));
    return;
  }
  const int64_t context = runner_.model().config().max_position_embeddings;
  auto request = std::make_shared<Request>();
  request->key = r.key;
  request->stream = rng_stream_id(r.rng_key ? *r.rng_key : r.key);
  request->first_sample = r.first_sample;
  request->params = std::move(r.params);
  request->prompt_len = int32_t(r.prompt.size());
  request->capacity = request->prompt_len + std::min<int64_t>(request->params.max_new_tokens,
                                                              context - request->prompt_len);
  counters_.prompt_tokens += request->prompt_len;

  LiveRequest& live = live_[r.key];
  live.request = request;
  live.unfinished = r.n;
  for (int32_t i = 0; i < r.n; ++i) {
    auto s = std::make_unique<Sequence>();
    s->request = request;
    s->sample_index = i;
    s->arrival = arrivals_++;
    s->tokens = r.prompt;
    live.samples.push_back(std::move(s));
  }
  if (request->params.max_new_tokens == 0) {
    for (auto& s : live.samples) {
      EngineEvent e{r.key, s->sample_index};
      finish(*s, FinishReason::kLength, "", e);
      events.push_back(std::move(e));
    }
    return;
  }
  // Sample 0 computes the prompt; the others fork its blocks when it is done.
  Sequence& leader = *live.samples[0];
  for (int32_t i = 1; i < r.n; ++i) leader.forks.push_back(live.samples[size_t(i)].get());
  scheduler_.enqueue(&leader);
}

void Engine::apply(const Stop& stop, std::vector<EngineEvent>& events) {
  const auto it = live_.find(stop.key);
  if (it == live_.end()) return;  // finished already, or never added: nothing to do
  for (auto& s : it->second.samples) {
    if (s->finish != FinishReason::kNone) continue;
    if (stop.sample_index >= 0 && s->sample_index != stop.sample_index) continue;
    EngineEvent e{stop.key, s->sample_index};
    finish(*s, stop.reason, "", e);
    events.push_back(std::move(e));
  }
}

void Engine::finish(Sequence& s, FinishReason reason, std::string error, EngineEvent& event) {
  scheduler_.remove(&s);
  if (s.awaiting_token) {  // the token it waited for is never taken
    s.tokens.pop_back();
    s.awaiting_token = false;
  }
  s.finish = reason;
  event.finish = reason;
  event.error = std::move(error);
  event.prompt_tokens = s.request->prompt_len;
  event.cached_prompt_tokens = s.request->cached_prompt_tokens;
  event.completion_tokens = s.generated();
  --live_.at(s.request->key).unfinished;
}

void Engine::accept(Sequence& s, RowOutcome outcome, std::vector<EngineEvent>& events) {
  const SamplingParams& p = s.request->params;
  EngineEvent e{s.request->key, s.sample_index};
  if (!outcome.error.empty()) {
    finish(s, FinishReason::kError, cat("request '", s.request->key, "': ", outcome.error), e);
    events.push_back(std::move(e));
    return;
  }
  const int32_t token = outcome.token.token;
  if (s.awaiting_token) {  // the placeholder the step after this one computed
    s.tokens.back() = token;
    s.awaiting_token = false;
  } else {
    s.tokens.push_back(token);
  }
  ++counters_.generated_tokens;
  e.token = std::move(outcome.token);
  FinishReason reason = FinishReason::kNone;
  if (!p.ignore_eos && contains(config_.eos_token_ids, token)) {
    reason = FinishReason::kEos;
  } else if (contains(p.stop_token_ids, token)) {
    reason = FinishReason::kStopToken;
  } else if (s.generated() >= p.max_new_tokens || int64_t(s.tokens.size()) >= s.request->capacity) {
    reason = FinishReason::kLength;
  }
  if (reason != FinishReason::kNone) finish(s, reason, "", e);
  events.push_back(std::move(e));
}

std::vector<EngineEvent> Engine::step() {
  const auto started = Clock::now();
  std::vector<Command> commands;
  {
    std::lock_guard lock(mutex_);
    commands.swap(commands_);
  }
  std::vector<EngineEvent> events;
  for (Command& c : commands) {
    if (auto* r = std::get_if<EngineRequest>(&c)) {
      take_in(*r, events);
    } else {
      apply(std::get<Stop>(c), events);
    }
  }

  const int32_t depth = config_.overlap ? 2 : config_.micro_batches;
  while (int32_t(in_flight_.size()) < depth && launch_step()) {
  }
  if (!in_flight_.empty()) finish_step(events);

  for (auto it = live_.begin(); it != live_.end();) {
    if (it->second.unfinished != 0) {
      ++it;
      continue;
    }
    for (auto& s : it->second.samples)
      if (s->in_flight > 0) retired_.push_back(std::move(s));
    it = live_.erase(it);
  }
  std::erase_if(retired_, [](const std::unique_ptr<Sequence>& s) { return s->in_flight == 0; });
  ++counters_.steps;
  counters_.step_seconds += seconds_since(started);
  publish_stats();
  return events;
}

bool Engine::can_run_ahead(const Sequence& s, bool samples) const {
  if (s.in_flight != 1 || s.ahead || s.finish != FinishReason::kNone) return false;
  if (!samples) return true;  // its next prompt chunk needs nothing from this step
  const Request& r = *s.request;
  return s.forks.empty() && !r.params.penalized() &&
         // the token in flight cannot end it by length
         s.generated() + 1 < r.params.max_new_tokens && int64_t(s.tokens.size()) + 1 < r.capacity;
}

void Engine::run_ahead(InFlight& newest) {
  for (InFlightChunk& c : newest.chunks) {
    Sequence& s = *c.sequence;
    if (!can_run_ahead(s, c.samples)) continue;
    // Its keys and values for the step's positions are written before the next step reads them
    // (steps run in launch order), so they count as computed now.
    s.computed += c.tokens;
    c.advanced = true;
    s.ahead = true;
    if (!c.samples) continue;
    s.tokens.push_back(token_placeholder(c.sample));
    s.awaiting_token = true;
  }
}

bool Engine::launch_step() {
  if (config_.overlap && !in_flight_.empty()) run_ahead(in_flight_.back());
  // Each micro-batch takes about its share of the sequences, so that P of them hold them all.
  int32_t share = INT32_MAX;
  if (config_.micro_batches > 1) {
    const int32_t sequences = scheduler_.num_running() + scheduler_.num_waiting();
    share = std::max(1, (sequences + config_.micro_batches - 1) / config_.micro_batches);
  }
  const ScheduledStep scheduled = scheduler_.schedule(share);
  if (scheduled.chunks.empty()) return false;
  StepPlan plan;
  InFlight flight;
  for (const BlockCopy& c : scheduled.copies) plan.copies.push_back({c.src, c.dst});
  std::vector<RowSample> samples;
  int32_t rows = 0;
  for (const ScheduledChunk& c : scheduled.chunks) {
    Sequence& s = *c.sequence;
    StepSequence q;
    q.first_position = s.computed;
    q.tokens.assign(s.tokens.begin() + s.computed, s.tokens.begin() + s.computed + c.tokens);
    q.block_table = s.table.blocks;
    q.logits = c.tokens == s.pending();  // the sequence's last token: it samples
    InFlightChunk& chunk = flight.chunks.emplace_back(
        InFlightChunk{&s, c.tokens, q.logits,
                      c.tokens == 1 && s.pending() == 1 && s.generated() > 0, s.awaiting_token});
    counters_.ahead_tokens += chunk.ahead;
    plan.sequences.push_back(std::move(q));
    ++s.in_flight;
    if (!chunk.samples) continue;
    chunk.sample = int32_t(samples.size());
    // It samples its row, and so do the request's other samples waiting for this prefill.
    const int32_t row = rows++;
    std::vector<Sequence*> takers{&s};
    takers.insert(takers.end(), s.forks.begin(), s.forks.end());
    for (Sequence* t : takers) {
      const Request& r = *t->request;
      samples.push_back(
          {row,
           r.params,
           {r.stream, r.first_sample + uint64_t(t->sample_index), uint64_t(t->generated())},
           r.prompt_len,
           history_for(r.params, t->tokens)});
      flight.sampled.push_back(t);
    }
  }
  plan.sampling = encode_row_samples(samples);
  const auto forward_started = Clock::now();
  runner_.launch(plan);
  counters_.forward_seconds += seconds_since(forward_started);
  in_flight_.push_back(std::move(flight));
  return true;
}

void Engine::finish_step(std::vector<EngineEvent>& events) {
  InFlight flight = std::move(in_flight_.front());
  in_flight_.pop_front();
  const auto forward_started = Clock::now();
  ModelRunner::StepResult result = runner_.finish();
  counters_.forward_seconds += seconds_since(forward_started) - result.sample_seconds;
  counters_.sample_seconds += result.sample_seconds;
  DSMATH_CHECK(result.samples.size() == flight.sampled.size(), "step came back with ",
               result.samples.size(), " sampled tokens for ", flight.sampled.size(), " samples");

  // Who takes a token: each sampling sequence still running, and the forks that take its
  // prompt now (a fork stopped meanwhile is no longer among them).
  std::vector<Sequence*> takers;
  for (const InFlightChunk& c : flight.chunks) {
    Sequence& s = *c.sequence;
    --s.in_flight;
    if (c.advanced) s.ahead = false;        // back: no longer ahead of it
    if (s.finish != FinishReason::kNone) {  // ended meanwhile: its result is dropped
      counters_.dropped_ahead += c.ahead;
      continue;
    }
    if (!c.decode) counters_.prefill_tokens += c.tokens;
    if (!c.advanced) s.computed += c.tokens;
    blocks_.cache_full_blocks(s.table, s.tokens, s.computed, s.block_hashes);
    if (!c.samples) continue;
    takers.push_back(&s);
    // The request's other samples take the prompt just computed.
    for (Sequence* f : s.forks) {
      f->table = blocks_.fork(s.table);
      f->computed = s.computed;
      f->block_hashes = s.block_hashes;
      scheduler_.add_running(f);
      takers.push_back(f);
    }
    s.forks.clear();
  }
  for (Sequence* t : takers) {
    const auto at = std::find(flight.sampled.begin(), flight.sampled.end(), t);
    DSMATH_CHECK(at != flight.sampled.end(), "a sample took a token its step did not draw");
    accept(*t, std::move(result.samples[size_t(at - flight.sampled.begin())]), events);
  }
}

void Engine::publish_stats() {
  EngineStats s = counters_;
  int64_t unfinished = 0;
  for (const auto& [key, live] : live_) unfinished += live.unfinished;
  s.running = scheduler_.num_running();
  s.queued = unfinished - s.running;  // waiting sequences and the forks waiting on a prefill
  s.preempted = scheduler_.num_preempted();
  s.preemptions = scheduler_.preemptions();
  s.live_requests = int64_t(live_.size());
  s.kv_blocks_free = blocks_.num_free() - blocks_.num_cached_free();
  s.kv_blocks_cached = blocks_.num_cached_free();
  s.kv_blocks_used = blocks_.num_used();
  s.prefix_cache_hit_tokens = scheduler_.cache_hit_tokens();
  std::lock_guard lock(mutex_);
  published_ = s;
}

}  // namespace dsmath
