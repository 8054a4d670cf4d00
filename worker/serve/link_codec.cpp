#include "worker/serve/link_codec.h"

namespace dsmath {

worker::v1::Sampling to_proto(const SamplingParams& p) {
  worker::v1::Sampling s;
  s.set_temperature(p.temperature);
  s.set_top_k(p.top_k);
  s.set_top_p(p.top_p);
  s.set_min_p(p.min_p);
  s.set_repetition_penalty(p.repetition_penalty);
  s.set_presence_penalty(p.presence_penalty);
  s.set_frequency_penalty(p.frequency_penalty);
  s.set_seed(p.seed);
  s.set_max_new_tokens(p.max_new_tokens);
  s.set_ignore_eos(p.ignore_eos);
  for (int32_t id : p.stop_token_ids) s.add_stop_token_ids(id);
  s.set_logprobs(p.logprobs);
  s.set_top_logprobs(p.top_logprobs);
  return s;
}

SamplingParams from_proto(const worker::v1::Sampling& s) {
  SamplingParams p;
  p.temperature = s.temperature();
  p.top_k = s.top_k();
  p.top_p = s.top_p();
  p.min_p = s.min_p();
  p.repetition_penalty = s.repetition_penalty();
  p.presence_penalty = s.presence_penalty();
  p.frequency_penalty = s.frequency_penalty();
  p.seed = s.seed();
  p.max_new_tokens = s.max_new_tokens();
  p.ignore_eos = s.ignore_eos();
  p.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  p.logprobs = s.logprobs();
  p.top_logprobs = s.top_logprobs();
  return p;
}

worker::v1::Finish to_proto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone:
      return worker::v1::FINISH_NONE;
    case FinishReason::kEos:
      return worker::v1::FINISH_EOS;
    case FinishReason::kStopToken:
      return worker::v1::FINISH_STOP_TOKEN;
    case FinishReason::kLength:
      return worker::v1::FINISH_LENGTH;
    case FinishReason::kStop:
      return worker::v1::FINISH_STOP;
    case FinishReason::kCancelled:
      return worker::v1::FINISH_CANCELLED;
    case FinishReason::kError:
      return worker::v1::FINISH_ERROR;
  }
  return worker::v1::FINISH_ERROR;
}

FinishReason from_proto(worker::v1::Finish finish) {
  switch (finish) {
    case worker::v1::FINISH_NONE:
      return FinishReason::kNone;
    case worker::v1::FINISH_EOS:
      return FinishReason::kEos;
    case worker::v1::FINISH_STOP_TOKEN:
      return FinishReason::kStopToken;
    case worker::v1::FINISH_LENGTH:
      return FinishReason::kLength;
    case worker::v1::FINISH_STOP:
      return FinishReason::kStop;
    case worker::v1::FINISH_CANCELLED:
      return FinishReason::kCancelled;
    default:
      return FinishReason::kError;  // FINISH_ERROR, or a value from a newer worker
  }
}

void to_proto(const EngineEvent& e, worker::v1::TokenEvent* out) {
  out->set_key(e.key);
  out->set_sample_index(e.sample_index);
  if (e.token) {
    out->set_has_token(true);
    out->set_token_id(e.token->token);
    out->set_logprob(e.token->logprob);
    for (const TokenLogprob& t : e.token->top) {
      worker::v1::TopLogprob* top = out->add_top();
      top->set_token_id(t.token);
      top->set_logprob(t.logprob);
    }
  }
  out->set_finish(to_proto(e.finish));
  if (e.finish != FinishReason::kNone) {
    out->set_error(e.error);
    out->set_prompt_tokens(e.prompt_tokens);
    out->set_cached_prompt_tokens(e.cached_prompt_tokens);
    out->set_completion_tokens(e.completion_tokens);
  }
}

void to_proto(const EngineStats& s, worker::v1::EngineStats* out) {
  out->set_queued(s.queued);
  out->set_running(s.running);
  out->set_preempted(s.preempted);
  out->set_preemptions(s.preemptions);
  out->set_live_requests(s.live_requests);
  out->set_kv_blocks_used(s.kv_blocks_used);
  out->set_kv_blocks_free(s.kv_blocks_free);
  out->set_kv_blocks_cached(s.kv_blocks_cached);
  out->set_prefix_cache_hit_tokens(s.prefix_cache_hit_tokens);
  out->set_prompt_tokens(s.prompt_tokens);
  out->set_prefill_tokens(s.prefill_tokens);
  out->set_generated_tokens(s.generated_tokens);
  out->set_steps(s.steps);
}

SamplingParams sampling_params(const JobSampling& s) {
  SamplingParams p;
  p.temperature = s.temperature;
  p.top_p = s.top_p;
  p.top_k = s.top_k;
  p.min_p = s.min_p;
  p.max_new_tokens = s.max_new_tokens;
  p.seed = s.seed;
  p.logprobs = true;
  return p;
}

}  // namespace dsmath
