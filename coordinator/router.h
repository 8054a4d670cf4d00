// The coordinator's one shared state: the registered worker groups and the live requests.
// Requests go to the least-loaded group (fewest unfinished samples); a group's step events
// become text and stream messages here; when a group is lost, its requests that have sent the
// client nothing yet run again elsewhere, the others end UNAVAILABLE.
//
// One mutex guards it all. Responses are queued on the sinks under it and handed to gRPC after
// it is released (ResponseSink::flush), so no gRPC call is ever made while holding it.
#pragma once

#include <grpcpp/support/status.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "coordinator/metrics.h"
#include "coordinator/served_request.h"
#include "proto/worker.pb.h"

namespace dsmath {

// Where a request's responses go (a streaming or a unary RPC).
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  // Router lock held: queue a stream message (streaming sinks only).
  virtual void push(v1::GenerateStreamResponse message) = 0;
  // Router lock held: the request is over. `response`: the whole result, for unary sinks.
  virtual void complete(grpc::Status status, v1::GenerateResponse response) = 0;
  // No lock held: hand what was queued to gRPC.
  virtual void flush() = 0;
};

// The coordinator's end of one worker group's stream.
class GroupLink {
 public:
  virtual ~GroupLink() = default;
  virtual void send(worker::v1::CoordinatorMessage message) = 0;  // router lock held: queue
  virtual void close(grpc::Status status) = 0;                    // router lock held: queue
  virtual void flush() = 0;                                       // no lock held
};

struct RouterOptions {
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds heartbeat_timeout{10000};
};

struct GroupSnapshot {
  std::string id, host;
  int32_t tp = 0, kv_blocks = 0;
  int64_t assigned_samples = 0;
  worker::v1::EngineStats stats;
};

struct RouterSnapshot {
  int64_t live_requests = 0;
  int64_t queue_depth = 0;  // live requests without a first token yet
  std::vector<GroupSnapshot> groups;
};

class Router {
 public:
  Router(const ServedModel& model, const ServerLimits& limits, RouterOptions options,
         Metrics& metrics);

  // ---- the public API's side
  // Takes a planned request; returns its internal key, or a refusal: ALREADY_EXISTS (a live
  // request has the id), RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (no group, draining).
  grpc::Status submit(RequestPlan plan, bool streaming, std::shared_ptr<ResponseSink> sink,
                      std::string* key);
  // The client went away (cancel, deadline, broken stream): free the request's sequences. The
  // request ends with `why` (CANCELLED or DEADLINE_EXCEEDED).
  void client_gone(const std::string& key, const grpc::Status& why);
  // Abort by request id: the outputs end "cancelled". False when no live request has the id.
  bool abort(const std::string& request_id);

  // ---- the worker link's side
  // Checks a registration; returns the new group's id or a refusal (FAILED_PRECONDITION).
  grpc::Status add_group(std::shared_ptr<GroupLink> link, const worker::v1::Register& info,
                         std::string* group_id);
  // The group's stream ended or broke. Its requests go elsewhere or end UNAVAILABLE.
  void remove_group(const std::string& group_id, const std::string& why);
  // A message from a registered group. Non-OK: the message was malformed; the caller drops it.
  grpc::Status on_message(const std::string& group_id, const worker::v1::WorkerMessage& message);
  // Drops groups silent for longer than the heartbeat timeout.
  void check_heartbeats();

  // ---- lifecycle
  void start_draining();  // refuse new requests with UNAVAILABLE
  void end_all(const grpc::Status& status);
  // Tells every group to exit (`tell_exit`), or only closes their links so that they reconnect
  // to the next coordinator.
  void shutdown_groups(const std::string& reason, bool tell_exit);
  bool serving() const;  // groups registered and not draining
  // Called now and whenever serving() changes (router lock held: it must not call back).
  void set_serving_listener(std::function<void(bool)> listener);
  RouterSnapshot snapshot() const;

 private:
  struct Group {
    std::shared_ptr<GroupLink> link;
    worker::v1::Register info;
    worker::v1::EngineStats stats;
    Clock::time_point last_seen;
    int64_t assigned_samples = 0;
  };
  struct Live {
    std::unique_ptr<ServedRequest> request;
    std::shared_ptr<ResponseSink> sink;
    std::string group;
  };
  using Flush = std::vector<std::function<void()>>;

  // All with mutex_ held; what must be flushed afterwards is added to `flush`.
  bool dispatch(const std::string& key, Live& live, Flush& flush);
  void end(std::map<std::string, Live>::iterator it, const grpc::Status& status,
           std::optional<v1::GenerateStreamResponse> last, Flush& flush);
  void drop_group(const std::string& group_id, const std::string& why, Flush& flush);
  void apply_events(const std::string& group_id, Group& group, const worker::v1::StepEvents& events,
                    Flush& flush);
  void update_serving();
  static void run(Flush& flush);

  const ServedModel& model_;
  ServerLimits limits_;
  RouterOptions options_;
  Metrics& metrics_;

  mutable std::mutex mutex_;
  std::map<std::string, Group> groups_;
  std::map<std::string, Live> live_;                   // by internal key
  std::map<std::string, std::string> key_of_request_;  // request id -> key
  uint64_t next_key_ = 0, next_group_ = 0;
  bool draining_ = false, serving_ = false;
  std::function<void(bool)> on_serving_changed_;
};

}  // namespace dsmath
