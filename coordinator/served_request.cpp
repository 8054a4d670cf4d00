#include "coordinator/served_request.h"

#include <algorithm>

#include "common/core/error.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

ServedRequest::ServedRequest(RequestPlan plan, const ServedModel& model, bool streaming,
                             Clock::time_point arrival)
    : plan_(std::move(plan)),
      model_(model),
      streaming_(streaming),
      arrival_(arrival),
      dispatched_(arrival) {
  restart();
}

void ServedRequest::restart() {
  samples_.clear();
  samples_.reserve(size_t(plan_.n));
  for (int32_t i = 0; i < plan_.n; ++i) {
    samples_.push_back({TextStream(model_.tokenizer, plan_.stop), {}, {}, false});
    samples_.back().output.set_index(uint32_t(i));
  }
  unfinished_ = plan_.n;
  cached_prompt_tokens_ = 0;
  first_token_.reset();
}

v1::Output* ServedRequest::delta(v1::GenerateStreamResponse& m, std::vector<int>& slot,
                                 int32_t index) {
  if (slot[size_t(index)] < 0) {
    slot[size_t(index)] = m.outputs_size();
    m.add_outputs()->set_index(uint32_t(index));
  }
  return m.mutable_outputs(slot[size_t(index)]);
}

void ServedRequest::finish_sample(Sample& s, v1::Output* d, const std::string& reason) {
  s.done = true;
  --unfinished_;
  s.output.set_finish_reason(reason);
  d->set_finish_reason(reason);
  if (s.output.has_stop_reason()) *d->mutable_stop_reason() = s.output.stop_reason();
}

ServedRequest::Update ServedRequest::apply(std::span<const worker::v1::TokenEvent* const> events,
                                           Clock::time_point now) {
  Update u;
  if (unfinished_ == 0) return u;  // over already: the worker's late events change nothing
  v1::GenerateStreamResponse m;
  std::vector<int> slot(samples_.size(), -1);
  for (const worker::v1::TokenEvent* e : events) {
    if (e->sample_index() == -1) {  // the engine refused the request as a whole
      u.finished = true;
      u.status = {grpc::StatusCode::INVALID_ARGUMENT, e->error()};
      return u;
    }
    if (e->sample_index() < -1 || e->sample_index() >= plan_.n)
      throw RequestError{grpc::StatusCode::INTERNAL, cat("event for sample ", e->sample_index(),
                                                         " of a request with n = ", plan_.n)};
    Sample& s = samples_[size_t(e->sample_index())];
    if (s.done) continue;  // the worker's events after a stop string matched here
    v1::Output* d = delta(m, slot, e->sample_index());

    if (e->has_token()) {
      const int32_t id = e->token_id();
      if (id < 0 || id >= model_.config.vocab_size)
        throw RequestError{grpc::StatusCode::INTERNAL,
                           cat("token id ", id, " is outside the vocabulary")};
      if (!first_token_) {
        first_token_ = now;
        u.time_to_first_token = seconds(now - arrival_);
      }
      if (s.last_token) u.inter_token_seconds.push_back(seconds(now - *s.last_token));
      s.last_token = now;
      ++u.new_tokens;
      d->add_token_ids(id);
      s.output.add_token_ids(id);
      if (plan_.params.logprobs) {
        v1::LogprobEntry entry;
        entry.set_token_id(id);
        entry.set_logprob(e->logprob());
        for (const worker::v1::TopLogprob& t : e->top()) {
          v1::TokenLogprob* top = entry.add_top();
          top->set_token_id(t.token_id());
          top->set_logprob(t.logprob());
          const int32_t alt = t.token_id();
          if (alt >= 0 && alt < model_.config.vocab_size)
            top->set_token(model_.tokenizer.decode(std::span(&alt, 1)));
        }
        *d->add_logprobs() = entry;
        *s.output.add_logprobs() = std::move(entry);
      }
      const std::string text = s.text.push(id);
      d->mutable_text()->append(text);
      s.output.mutable_text()->append(text);
      if (s.text.stopped()) {
        s.output.mutable_stop_reason()->set_stop_string(s.text.matched_stop());
        finish_sample(s, d, "stop");
        u.stop_samples.push_back(e->sample_index());
        continue;
      }
    }

    const FinishReason finish = from_proto(e->finish());
    if (finish == FinishReason::kNone) continue;
    if (finish == FinishReason::kError) {
      u.finished = true;
      u.status = {grpc::StatusCode::INTERNAL,
                  cat("sample ", e->sample_index(), " failed on the worker: ", e->error())};
      return u;
    }
    cached_prompt_tokens_ = std::max(cached_prompt_tokens_, e->cached_prompt_tokens());
    const std::string tail = s.text.finish();
    d->mutable_text()->append(tail);
    s.output.mutable_text()->append(tail);
    const int32_t last = s.output.token_ids().empty() ? -1 : s.output.token_ids().rbegin()[0];
    v1::StopReason* why = s.output.mutable_stop_reason();
    std::string reason = "stop";
    if (s.text.stopped()) {
      why->set_stop_string(s.text.matched_stop());
    } else if (finish == FinishReason::kEos) {
      why->set_eos_token_id(last);
    } else if (finish == FinishReason::kStopToken) {
      why->set_stop_token_id(last);
    } else {
      s.output.clear_stop_reason();
      reason = finish == FinishReason::kLength      ? "length"
               : finish == FinishReason::kCancelled ? "cancelled"
                                                    : "stop";
    }
    finish_sample(s, d, reason);
  }
  if (unfinished_ == 0) u.finished = true;
  close(m, u, now);
  return u;
}

ServedRequest::Update ServedRequest::cancel(Clock::time_point now) {
  Update u;
  v1::GenerateStreamResponse m;
  std::vector<int> slot(samples_.size(), -1);
  for (int32_t i = 0; i < plan_.n; ++i) {
    Sample& s = samples_[size_t(i)];
    if (s.done) continue;
    v1::Output* d = delta(m, slot, i);
    const std::string tail = s.text.finish();
    d->mutable_text()->append(tail);
    s.output.mutable_text()->append(tail);
    finish_sample(s, d, "cancelled");
  }
  u.finished = true;
  close(m, u, now);
  return u;
}

void ServedRequest::close(v1::GenerateStreamResponse& m, Update& u, Clock::time_point now) {
  if (!streaming_ || (m.outputs_size() == 0 && !u.finished)) return;
  m.set_request_id(plan_.request_id);
  if (!streamed_) m.set_seed(plan_.params.seed);
  if (u.finished) fill_usage_and_timings(m.mutable_usage(), m.mutable_timings(), now);
  u.message = std::move(m);
  streamed_ = true;
}

void ServedRequest::fill_usage_and_timings(v1::Usage* usage, v1::Timings* timings,
                                           Clock::time_point now) const {
  uint32_t completion = 0;
  for (const Sample& s : samples_) completion += uint32_t(s.output.token_ids_size());
  usage->set_prompt_tokens(uint32_t(plan_.prompt.size()));
  usage->set_completion_tokens(completion);
  usage->set_cached_prompt_tokens(uint32_t(cached_prompt_tokens_));
  timings->set_queued_seconds(seconds(dispatched_ - arrival_));
  if (first_token_) timings->set_time_to_first_token_seconds(seconds(*first_token_ - arrival_));
  timings->set_total_seconds(seconds(now - arrival_));
}

v1::GenerateResponse ServedRequest::response(Clock::time_point now) const {
  v1::GenerateResponse r;
  r.set_request_id(plan_.request_id);
  r.set_seed(plan_.params.seed);
  for (const Sample& s : samples_) *r.add_outputs() = s.output;
  fill_usage_and_timings(r.mutable_usage(), r.mutable_timings(), now);
  return r;
}

}  // namespace dsmath
