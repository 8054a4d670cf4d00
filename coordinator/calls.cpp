#include "coordinator/calls.h"

namespace dsmath {
namespace {

// Why a call ended from the client's side, for the request's status and the metrics. A client
// cancels at its own deadline, which reaches us a little before ours (the deadline travels as a
// timeout relative to the call's arrival): within the slack, that is the deadline too.
grpc::Status why_gone(const grpc::CallbackServerContext* context) {
  constexpr auto kSlack = std::chrono::milliseconds(100);
  if (context->deadline() <= std::chrono::system_clock::now() + kSlack)
    return {grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed"};
  return {grpc::StatusCode::CANCELLED, "the client cancelled the request"};
}

}  // namespace

// ---- GenerateStream -------------------------------------------------------------------------

void StreamCall::start(const std::function<grpc::Status(std::string* key)>& submit) {
  self_ = shared_from_this();
  const grpc::Status status = submit(&key_);
  if (!status.ok()) complete(status, {});
  flush();
}

void StreamCall::push(v1::GenerateStreamResponse message) {
  outbox_.push(std::move(message));
}

void StreamCall::complete(grpc::Status status, v1::GenerateResponse) {
  outbox_.close(std::move(status));
}

void StreamCall::flush() {
  outbox_.pump([this](const v1::GenerateStreamResponse* m) { StartWrite(m); },
               [this](const grpc::Status& s) { Finish(s); });
}

void StreamCall::OnWriteDone(bool ok) {
  outbox_.written(ok);  // !ok: the client is gone; OnCancel follows
  flush();
}

void StreamCall::OnCancel() {
  router_.client_gone(key_, why_gone(context_));
}

void StreamCall::OnDone() {
  self_.reset();
}

// ---- Generate -------------------------------------------------------------------------------

void UnaryCall::start(const std::function<grpc::Status(std::string* key)>& submit) {
  self_ = shared_from_this();
  const grpc::Status status = submit(&key_);
  if (!status.ok()) complete(status, {});
  flush();
}

void UnaryCall::complete(grpc::Status status, v1::GenerateResponse response) {
  std::lock_guard lock(mutex_);
  if (done_) return;
  done_ = true;
  status_ = std::move(status);
  if (status_.ok()) *response_ = std::move(response);
}

void UnaryCall::flush() {
  std::unique_lock lock(mutex_);
  if (!done_ || finished_) return;
  finished_ = true;
  lock.unlock();
  Finish(status_);
}

void UnaryCall::OnCancel() {
  router_.client_gone(key_, why_gone(context_));
}

void UnaryCall::OnDone() {
  self_.reset();
}

// ---- a worker group's link ------------------------------------------------------------------

void GroupStream::start(const grpc::Status& admitted) {
  self_ = shared_from_this();
  if (!admitted.ok()) {
    close(admitted);
    flush();
    return;
  }
  StartRead(&in_);
}

void GroupStream::send(worker::v1::CoordinatorMessage message) {
  outbox_.push(std::move(message));
}

void GroupStream::close(grpc::Status status) {
  outbox_.close(std::move(status));
}

void GroupStream::flush() {
  outbox_.pump([this](const worker::v1::CoordinatorMessage* m) { StartWrite(m); },
               [this](const grpc::Status& s) { Finish(s); });
}

void GroupStream::OnWriteDone(bool ok) {
  outbox_.written(ok);  // !ok: the read side fails next and drops the group
  flush();
}

void GroupStream::OnReadDone(bool ok) {
  if (!ok) {  // the worker closed its side (shutdown) or the connection broke
    router_.remove_group(group_id_, "the worker group closed its stream");
    close(grpc::Status::OK);
    flush();
    return;
  }
  grpc::Status status;
  if (group_id_.empty()) {
    status = in_.has_register_()
                 ? router_.add_group(shared_from_this(), in_.register_(), &group_id_)
                 : grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "a worker's first message must be its registration");
  } else {
    status = router_.on_message(group_id_, in_);
  }
  if (!status.ok()) {
    close(status);  // first: the worker learns why (the router's close says only UNAVAILABLE)
    if (!group_id_.empty()) router_.remove_group(group_id_, status.error_message());
    flush();
    return;
  }
  StartRead(&in_);
}

void GroupStream::OnDone() {
  if (!group_id_.empty()) router_.remove_group(group_id_, "the worker link ended");
  self_.reset();
}

}  // namespace dsmath
