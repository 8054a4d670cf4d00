// The reactors of the coordinator's gRPC calls (callback API, no thread per call): a Generate
// or GenerateStream call is a ResponseSink of the router; a worker group's stream is a
// GroupLink. Each keeps an outbox written one message at a time, and keeps itself alive until
// gRPC says it is done (OnDone).
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <mutex>

#include "coordinator/router.h"
#include "proto/dsmath.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dsmath {

class StreamCall final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
                         public ResponseSink,
                         public std::enable_shared_from_this<StreamCall> {
 public:
  explicit StreamCall(Router& router) : router_(router) {}
  // Starts the call: `submit` returns the router's answer and sets the request's key.
  void start(const std::function<grpc::Status(std::string* key)>& submit);

  void push(v1::GenerateStreamResponse message) override;
  void complete(grpc::Status status, v1::GenerateResponse response) override;
  void flush() override;

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  Router& router_;
  std::shared_ptr<StreamCall> self_;
  std::mutex mutex_;
  std::string key_;
  std::deque<v1::GenerateStreamResponse> outbox_;
  v1::GenerateStreamResponse writing_message_;
  bool writing_ = false, done_ = false, finished_ = false;
  grpc::Status status_;
};

class UnaryCall final : public grpc::ServerUnaryReactor,
                        public ResponseSink,
                        public std::enable_shared_from_this<UnaryCall> {
 public:
  UnaryCall(Router& router, v1::GenerateResponse* response)
      : router_(router), response_(response) {}
  void start(const std::function<grpc::Status(std::string* key)>& submit);

  void push(v1::GenerateStreamResponse) override {}
  void complete(grpc::Status status, v1::GenerateResponse response) override;
  void flush() override;

  void OnCancel() override;
  void OnDone() override;

 private:
  Router& router_;
  v1::GenerateResponse* response_;
  std::shared_ptr<UnaryCall> self_;
  std::mutex mutex_;
  std::string key_;
  bool done_ = false, finished_ = false;
  grpc::Status status_;
};

class GroupStream final
    : public grpc::ServerBidiReactor<worker::v1::WorkerMessage, worker::v1::CoordinatorMessage>,
      public GroupLink,
      public std::enable_shared_from_this<GroupStream> {
 public:
  explicit GroupStream(Router& router) : router_(router) {}
  void start();

  void send(worker::v1::CoordinatorMessage message) override;
  void close(grpc::Status status) override;
  void flush() override;

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  Router& router_;
  std::shared_ptr<GroupStream> self_;
  std::string group_id_;  // empty until registered
  worker::v1::WorkerMessage in_;
  std::mutex mutex_;
  std::deque<worker::v1::CoordinatorMessage> outbox_;
  worker::v1::CoordinatorMessage writing_message_;
  bool writing_ = false, closing_ = false, finished_ = false, broken_ = false;
  grpc::Status status_;
};

}  // namespace dsmath
