#include "coordinator/calls.h"

namespace dsmath {

// ---- GenerateStream -------------------------------------------------------------------------

void StreamCall::start(const std::function<grpc::Status(std::string* key)>& submit) {
  self_ = shared_from_this();
  std::string key;
  const grpc::Status status = submit(&key);
  {
    std::lock_guard lock(mutex_);
    key_ = key;
  }
  if (!status.ok()) complete(status, {});
  flush();
}

void StreamCall::push(v1::GenerateStreamResponse message) {
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(message));
}

void StreamCall::complete(grpc::Status status, v1::GenerateResponse) {
  std::lock_guard lock(mutex_);
  if (done_) return;
  done_ = true;
  status_ = std::move(status);
}

// One write at a time; Finish once the outbox is empty and the request is over. gRPC may run
// OnWriteDone on this very thread, so no lock is held across StartWrite or Finish.
void StreamCall::flush() {
  std::unique_lock lock(mutex_);
  if (writing_ || finished_) return;
  if (!outbox_.empty()) {
    writing_message_ = std::move(outbox_.front());
    outbox_.pop_front();
    writing_ = true;
    lock.unlock();
    StartWrite(&writing_message_);
  } else if (done_) {
    finished_ = true;
    lock.unlock();
    Finish(status_);
  }
}

void StreamCall::OnWriteDone(bool ok) {
  {
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (!ok) outbox_.clear();  // the client is gone; OnCancel follows
  }
  flush();
}

void StreamCall::OnCancel() {
  std::string key;
  {
    std::lock_guard lock(mutex_);
    key = key_;
  }
  router_.client_gone(key, "the client cancelled the request or its deadline passed");
}

void StreamCall::OnDone() {
  self_.reset();
}

// ---- Generate -------------------------------------------------------------------------------

void UnaryCall::start(const std::function<grpc::Status(std::string* key)>& submit) {
  self_ = shared_from_this();
  std::string key;
  const grpc::Status status = submit(&key);
  {
    std::lock_guard lock(mutex_);
    key_ = key;
  }
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
  std::string key;
  {
    std::lock_guard lock(mutex_);
    key = key_;
  }
  router_.client_gone(key, "the client cancelled the request or its deadline passed");
}

void UnaryCall::OnDone() {
  self_.reset();
}

// ---- a worker group's link ------------------------------------------------------------------

void GroupStream::start() {
  self_ = shared_from_this();
  StartRead(&in_);
}

void GroupStream::send(worker::v1::CoordinatorMessage message) {
  std::lock_guard lock(mutex_);
  if (!closing_ && !broken_) outbox_.push_back(std::move(message));
}

void GroupStream::close(grpc::Status status) {
  std::lock_guard lock(mutex_);
  if (closing_) return;
  closing_ = true;
  status_ = std::move(status);
}

void GroupStream::flush() {
  std::unique_lock lock(mutex_);
  if (writing_ || finished_) return;
  if (!outbox_.empty()) {
    writing_message_ = std::move(outbox_.front());
    outbox_.pop_front();
    writing_ = true;
    lock.unlock();
    StartWrite(&writing_message_);
  } else if (closing_) {
    finished_ = true;
    lock.unlock();
    Finish(status_);
  }
}

void GroupStream::OnWriteDone(bool ok) {
  {
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (!ok) {
      broken_ = true;  // the read side fails next and drops the group
      outbox_.clear();
    }
  }
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
    if (!status.ok()) router_.remove_group(group_id_, status.error_message());
  }
  if (!status.ok()) {
    close(status);
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
