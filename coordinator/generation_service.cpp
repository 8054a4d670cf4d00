#include "coordinator/generation_service.h"

#include <algorithm>

#include "coordinator/calls.h"

namespace dsmath {

grpc::ServerUnaryReactor* refuse_unauthenticated(grpc::CallbackServerContext* context,
                                                 const BearerAuth& auth) {
  grpc::Status status = auth.check(*context);
  if (status.ok()) return nullptr;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status GenerationService::submit(const grpc::CallbackServerContext& context,
                                       const v1::GenerateRequest& request, bool streaming,
                                       std::shared_ptr<ResponseSink> sink, std::string* key) {
  grpc::Status status = auth_.check(context);
  try {
    if (status.ok())
      status =
          router_.submit(plan_request(request, model_, limits_), streaming, std::move(sink), key);
  } catch (const RequestError& e) {
    status = e.status();
  }
  if (!status.ok()) metrics_.count_request(status.error_code());
  return status;
}

grpc::ServerUnaryReactor* GenerationService::Generate(grpc::CallbackServerContext* context,
                                                      const v1::GenerateRequest* request,
                                                      v1::GenerateResponse* response) {
  auto call = std::make_shared<UnaryCall>(router_, context, response);
  call->start([&](std::string* key) { return submit(*context, *request, false, call, key); });
  return call.get();
}

grpc::ServerWriteReactor<v1::GenerateStreamResponse>* GenerationService::GenerateStream(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  auto call = std::make_shared<StreamCall>(router_, context);
  call->start([&](std::string* key) { return submit(*context, *request, true, call, key); });
  return call.get();
}

grpc::ServerUnaryReactor* GenerationService::Abort(grpc::CallbackServerContext* context,
                                                   const v1::AbortRequest* request,
                                                   v1::AbortResponse* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->request_id().empty()) {
    reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT, "request_id is empty"});
    return reactor;
  }
  response->set_aborted(router_.abort(request->request_id()));
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::Tokenize(grpc::CallbackServerContext* context,
                                                      const v1::TokenizeRequest* request,
                                                      v1::TokenizeResponse* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  try {
    for (int32_t id : tokenize_request(*request, model_)) {
      response->add_token_ids(id);
      response->add_tokens(model_.tokenizer.id_to_token(id));
    }
    reactor->Finish(grpc::Status::OK);
  } catch (const RequestError& e) {
    reactor->Finish(e.status());
  }
  return reactor;
}

grpc::ServerUnaryReactor* GenerationService::GetModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::ModelInfoRequest*,
                                                          v1::ModelInfo* info) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  const ModelConfig& c = model_.config;
  info->set_model(model_.name);
  info->set_architecture(c.architecture);
  info->set_vocab_size(c.vocab_size);
  info->set_hidden_size(c.hidden_size);
  info->set_num_layers(c.num_hidden_layers);
  info->set_num_attention_heads(c.num_attention_heads);
  info->set_num_key_value_heads(c.num_key_value_heads);
  info->set_max_context(c.max_position_embeddings);
  info->set_bos_token_id(model_.tokenizer.bos_id().value_or(int32_t(c.bos_token_id)));
  for (int32_t id : model_.eos_token_ids) info->add_eos_token_ids(id);
  info->set_fingerprint(model_.fingerprint);
  const GenerationConfig& g = model_.generation;
  v1::GenerationDefaults* d = info->mutable_defaults();
  d->set_max_new_tokens(g.max_new_tokens > 0 ? int32_t(g.max_new_tokens)
                                             : limits_.default_max_new_tokens);
  d->set_temperature(g.do_sample ? float(g.temperature) : 0.f);
  d->set_top_p(float(g.top_p));
  d->set_top_k(int32_t(g.top_k));
  v1::ServerLimits* l = info->mutable_limits();
  l->set_max_n(limits_.max_n);
  l->set_max_new_tokens(limits_.max_new_tokens);
  l->set_max_queue(limits_.max_queue);
  const int32_t context_prompt = int32_t(c.max_position_embeddings - 1);
  l->set_max_prompt_tokens(limits_.max_prompt_tokens > 0
                               ? std::min(limits_.max_prompt_tokens, context_prompt)
                               : context_prompt);
  for (const GroupSnapshot& s : router_.snapshot().groups) {
    v1::WorkerGroupInfo* w = info->add_worker_groups();
    w->set_group_id(s.id);
    w->set_host(s.host);
    w->set_tp(s.tp);
    w->set_kv_blocks_total(s.kv_blocks);
    w->set_kv_blocks_free(s.stats.kv_blocks_free());
    w->set_running_sequences(s.stats.running());
    w->set_queued_sequences(s.stats.queued());
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// Job files are opened and checked on the caller's thread: Submit answers when the job has
// started (or why it cannot), which takes as long as reading the input.
grpc::ServerUnaryReactor* BatchJobsService::Submit(grpc::CallbackServerContext* context,
                                                   const v1::SubmitBatchRequest* request,
                                                   v1::BatchJobStatus* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(jobs_.submit(*request, response));
  return reactor;
}

grpc::ServerUnaryReactor* BatchJobsService::Get(grpc::CallbackServerContext* context,
                                                const v1::BatchJobRequest* request,
                                                v1::BatchJobStatus* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(jobs_.get(request->job_id(), response));
  return reactor;
}

grpc::ServerUnaryReactor* BatchJobsService::Cancel(grpc::CallbackServerContext* context,
                                                   const v1::BatchJobRequest* request,
                                                   v1::BatchJobStatus* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(jobs_.cancel(request->job_id(), response));
  return reactor;
}

grpc::ServerUnaryReactor* BatchJobsService::List(grpc::CallbackServerContext* context,
                                                 const v1::ListBatchJobsRequest*,
                                                 v1::ListBatchJobsResponse* response) {
  if (auto* refused = refuse_unauthenticated(context, auth_)) return refused;
  jobs_.list(response);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<worker::v1::WorkerMessage, worker::v1::CoordinatorMessage>*
WorkerLinkService::Connect(grpc::CallbackServerContext* context) {
  auto stream = std::make_shared<GroupStream>(router_);
  stream->start(auth_.check(*context));
  return stream.get();
}

}  // namespace dsmath
