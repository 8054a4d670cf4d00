// The reactors of the coordinator's gRPC calls (callback API, no thread per call): a Generate
// or GenerateStream call is a ResponseSink of the router; a worker group's stream is a
// GroupLink. Streams write through an Outbox; each call keeps itself alive until gRPC says it is
// done (OnDone). `start` runs before the method handler returns the reactor, so the request's key
// is set before any reaction can read it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <mutex>

#include "coordinator/outbox.h"
#include "coordinator/router.h"
#include "proto/dsmath.grpc.pb.h"
#include "proto/worker.grpc.pb.h"

namespace dsmath {

class StreamCall final : public grpc::ServerWriteReactor<v1::GenerateStreamResponse>,
                         public ResponseSink,
                         public std::enable_shared_from_this<StreamCall> {
 public:
  StreamCall(Router& router, const grpc::CallbackServerContext* context)
      : router_(router), context_(context) {}
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
  const grpc::CallbackServerContext* context_;
  std::shared_ptr<StreamCall> self_;
  std::string key_;
  Outbox<v1::GenerateStreamResponse> outbox_;
};

class UnaryCall final : public grpc::ServerUnaryReactor,
                        public ResponseSink,
                        public std::enable_shared_from_this<UnaryCall> {
 public:
  UnaryCall(Router& router, const grpc::CallbackServerContext* context,
            v1::GenerateResponse* response)
      : router_(router), context_(context), response_(response) {}
  void start(const std::function<grpc::Status(std::string* key)>& submit);

  void push(v1::GenerateStreamResponse) override {}
  void complete(grpc::Status status, v1::GenerateResponse response) override;
  void flush() override;

  void OnCancel() override;
  void OnDone() override;

 private:
  Router& router_;
  const grpc::CallbackServerContext* context_;
  v1::GenerateResponse* response_;
  std::shared_ptr<UnaryCall> self_;
  std::string key_;
  std::mutex mutex_;
  bool done_ = false, finished_ = false;
  grpc::Status status_;
};

class GroupStream final
    : public grpc::ServerBidiReactor<worker::v1::WorkerMessage, worker::v1::CoordinatorMessage>,
      public GroupLink,
      public std::enable_shared_from_this<GroupStream> {
 public:
  explicit GroupStream(Router& router) : router_(router) {}
  // Reads the group's registration, or (when `admitted` is not OK) ends the stream with it.
  void start(const grpc::Status& admitted);

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
  Outbox<worker::v1::CoordinatorMessage> outbox_;
};

}  // namespace dsmath
