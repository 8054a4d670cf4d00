// The messages of one gRPC stream (callback API), written one at a time, then one Finish once
// the stream is closed and everything queued has gone out. push() and close() may come from any
// thread; pump() is called with no lock held, and calls StartWrite / Finish outside the outbox's
// own lock, because gRPC may run OnWriteDone (which calls written() and pump()) on the very
// thread that called StartWrite.
#pragma once

#include <grpcpp/support/status.h>

#include <deque>
#include <mutex>

namespace dsmath {

template <typename Message>
class Outbox {
 public:
  void push(Message message) {
    std::lock_guard lock(mutex_);
    if (!closed_ && !broken_) queue_.push_back(std::move(message));
  }
  // The stream ends with `status` after what is queued. Only the first close counts.
  void close(grpc::Status status) {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    status_ = std::move(status);
  }
  // From OnWriteDone. !ok: the peer is gone; what is queued is dropped.
  void written(bool ok) {
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (!ok) {
      broken_ = true;
      queue_.clear();
    }
  }
  // Starts the next write, or the Finish once closed and drained; does nothing while a write
  // is in flight or after the Finish.
  template <typename StartWrite, typename Finish>
  void pump(StartWrite start_write, Finish finish) {
    std::unique_lock lock(mutex_);
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      lock.unlock();
      start_write(&current_);
    } else if (closed_) {
      finished_ = true;
      const grpc::Status status = status_;
      lock.unlock();
      finish(status);
    }
  }

 private:
  std::mutex mutex_;
  std::deque<Message> queue_;
  Message current_;  // the message in flight: gRPC reads it until OnWriteDone
  bool writing_ = false, closed_ = false, finished_ = false, broken_ = false;
  grpc::Status status_;
};

}  // namespace dsmath
