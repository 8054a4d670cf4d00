#include "worker/serve/serve_command.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/checkpoint/fingerprint.h"
#include "common/core/error.h"
#include "coordinator/auth.h"
#include "proto/worker.grpc.pb.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

using worker::v1::CoordinatorMessage;
using worker::v1::WorkerMessage;
using Clock = std::chrono::steady_clock;

enum class SessionEnd { kLost, kShutdown, kRefused };

// The requests the engine holds for the coordinator, so that a lost link can cancel them all.
class LiveKeys {
 public:
  void add(const std::string& key, int32_t samples) {
    std::lock_guard lock(mutex_);
    unfinished_[key] = samples;
  }
  void on_event(const EngineEvent& e) {
    if (e.finish == FinishReason::kNone) return;
    std::lock_guard lock(mutex_);
    auto it = unfinished_.find(e.key);
    if (it != unfinished_.end() && (e.sample_index < 0 || --it->second <= 0)) unfinished_.erase(it);
  }
  std::vector<std::string> take_all() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> keys;
    for (const auto& [key, n] : unfinished_) keys.push_back(key);
    unfinished_.clear();
    return keys;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, int32_t> unfinished_;
};

// One connection to the coordinator, from registration until the stream ends.
class Session {
 public:
  Session(Engine& engine, const worker::v1::Register& registration,
          const std::shared_ptr<grpc::Channel>& channel, const std::string& secret)
      : engine_(engine),
        registration_(registration),
        stub_(worker::v1::WorkerLink::NewStub(channel)),
        secret_(secret) {}

  SessionEnd run();
  const std::string& why() const { return why_; }
  bool registered() const { return registered_; }

 private:
  void send(WorkerMessage message);
  void read_loop();
  void send_loop(std::chrono::milliseconds heartbeat_interval);
  void step_loop();
  SessionEnd end_with_status();

  Engine& engine_;
  const worker::v1::Register& registration_;
  std::unique_ptr<worker::v1::WorkerLink::Stub> stub_;
  const std::string& secret_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<WorkerMessage, CoordinatorMessage>> stream_;
  LiveKeys live_;
  std::atomic<bool> closed_{false}, shutdown_{false}, read_ended_{false};
  // The sender thread's queue: the step loop never waits for the network.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<WorkerMessage> outbox_;
  std::string why_;
  bool registered_ = false;
};

void Session::send(WorkerMessage message) {
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(message));
  wake_.notify_one();
}

void Session::read_loop() {
  CoordinatorMessage m;
  while (stream_->Read(&m)) {
    if (m.has_work()) {
      for (const worker::v1::WorkItem& item : m.work().items()) {
        EngineRequest r;
        r.key = item.key();
        r.rng_key = item.rng_key();
        r.prompt.assign(item.prompt().begin(), item.prompt().end());
        r.params = from_proto(item.sampling());
        r.n = item.n();
        r.first_sample = item.first_sample();
        live_.add(r.key, r.n);
        engine_.add(std::move(r));  // the engine validates it; a bad one is refused alone
      }
    } else if (m.has_cancel()) {
      for (const std::string& key : m.cancel().keys()) engine_.cancel(key);
    } else if (m.has_stop()) {
      engine_.stop(m.stop().key(), m.stop().sample_index());
    } else if (m.has_shutdown()) {
      why_ = "the coordinator shut the group down: " + m.shutdown().reason();
      shutdown_ = true;
      wake_.notify_all();
      return;  // the sender drains its queue, then the stream closes
    }
  }
  read_ended_ = true;
  closed_ = true;
  wake_.notify_all();
}

// Writes what the step loop queued, in order, and a heartbeat after each quiet interval. Ends
// when the link breaks, or on shutdown once the queue is empty.
void Session::send_loop(std::chrono::milliseconds heartbeat_interval) {
  std::unique_lock lock(mutex_);
  Clock::time_point heartbeat_due = Clock::now() + heartbeat_interval;
  for (;;) {
    wake_.wait_until(lock, heartbeat_due, [&] { return !outbox_.empty() || closed_ || shutdown_; });
    if (closed_ || (shutdown_ && outbox_.empty())) return;
    std::deque<WorkerMessage> batch;
    batch.swap(outbox_);
    lock.unlock();
    if (batch.empty()) {  // quiet: say we are alive (step events carry the stats otherwise)
      to_proto(engine_.stats(), batch.emplace_back().mutable_heartbeat()->mutable_stats());
    }
    for (const WorkerMessage& m : batch)
      if (!stream_->Write(m)) {
        closed_ = true;
        break;
      }
    lock.lock();
    heartbeat_due = Clock::now() + heartbeat_interval;
  }
}

SessionEnd Session::end_with_status() {
  const grpc::Status status = stream_->Finish();
  why_ = cat("coordinator: ",
             status.error_message().empty() ? "connection closed" : status.error_message());
  // Refused (another model, another protocol, no or the wrong secret) or dropped for a
  // malformed message: retrying would only repeat it.
  const bool refused = status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
                       status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
                       status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
  return refused ? SessionEnd::kRefused : SessionEnd::kLost;
}

SessionEnd Session::run() {
  context_.AddMetadata("dsmath-link-version", std::to_string(kWorkerLinkVersion));
  if (!secret_.empty()) context_.AddMetadata("authorization", "Bearer " + secret_);
  stream_ = stub_->Connect(&context_);
  WorkerMessage hello;
  *hello.mutable_register_() = registration_;
  CoordinatorMessage first;
  if (!stream_->Write(hello) || !stream_->Read(&first) || !first.has_registered())
    return end_with_status();
  registered_ = true;
  std::cerr << "dsmath-worker: joined the coordinator as group " << first.registered().group_id()
            << "\n";
  const auto interval =
      std::chrono::milliseconds(std::max(100, first.registered().heartbeat_interval_ms()));

  std::thread reader([&] { read_loop(); });
  std::thread sender([&] { send_loop(interval); });
  std::exception_ptr failure;  // from the engine or MPI: end the link first, then rethrow
  try {
    step_loop();
  } catch (...) {
    failure = std::current_exception();
    closed_ = true;
  }

  const bool shutdown = shutdown_ && !failure;
  wake_.notify_all();
  sender.join();  // on shutdown, after what was queued has gone out
  if (shutdown) {
    stream_->WritesDone();
  } else if (!read_ended_) {
    context_.TryCancel();  // unblocks the reader; not when it already saw the real status
  }
  reader.join();
  if (failure) std::rethrow_exception(failure);
  // Whatever the coordinator had here is now its to re-route or fail; free it all.
  for (const std::string& key : live_.take_all()) engine_.cancel(key);
  while (engine_.has_work()) engine_.step();
  if (!shutdown) return end_with_status();
  stream_->Finish();
  return SessionEnd::kShutdown;
}

void Session::step_loop() {
  while (!closed_ && !shutdown_) {
    if (!engine_.has_work()) {
      engine_.wait_for_work(std::chrono::milliseconds(50));
      continue;
    }
    std::vector<EngineEvent> events = engine_.step();
    if (events.empty()) continue;
    WorkerMessage m;
    worker::v1::StepEvents* step = m.mutable_events();
    for (const EngineEvent& e : events) {
      to_proto(e, step->add_events());
      live_.on_event(e);
    }
    to_proto(engine_.stats(), step->mutable_stats());
    send(std::move(m));
  }
}

std::shared_ptr<grpc::Channel> dial(const std::string& address,
                                    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);  // notice a dead coordinator host
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);  // the coordinator is inside the cluster
  args.SetMaxReceiveMessageSize(-1);           // work lists of long prompts can exceed 4 MB
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(address, std::move(credentials), args);
}

}  // namespace

int run_serve(const ServeOptions& o, Communicator& comm) {
  std::string fingerprint, secret;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  ModelGroup group(o.group, comm, [&](const Tokenizer&) {
    DSMATH_CHECK(!o.coordinator.empty(), "--coordinator: give the coordinator's address");
    DSMATH_CHECK(o.max_backoff_seconds > 0, "--max-reconnect-seconds must be positive, got ",
                 o.max_backoff_seconds);
    fingerprint = model_fingerprint(o.group.model_dir);
    if (!o.secret_file.empty())
      secret = BearerAuth::read_token_file(o.secret_file, "--worker-secret-file");
    credentials = channel_credentials(o.tls);  // bad TLS flags stop every rank now
  });
  if (!group.is_driver()) {
    group.runner().follow();
    return 0;
  }

  int exit_code = 0;
  {
    Engine engine(group.runner(), group.engine_config());
    const LlamaModel& model = group.runner().model();
    worker::v1::Register registration;
    registration.set_protocol_version(kWorkerLinkVersion);
    registration.set_fingerprint(fingerprint);
    registration.set_tp(group.topology().tp_size);
    registration.set_pp(group.topology().pp_size);
    registration.set_kv_blocks(model.kv_blocks());
    registration.set_block_size(model.block_size());
    registration.set_max_context(group.checkpoint().config().max_position_embeddings);
    registration.set_max_running(engine.config().max_running);
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    registration.set_host(host);
    registration.set_pid(getpid());

    const auto channel = dial(o.coordinator, credentials);
    const auto max_backoff = std::chrono::duration<double>(o.max_backoff_seconds);
    std::chrono::duration<double> backoff(0.25);
    for (;;) {
      Session session(engine, registration, channel, secret);
      const SessionEnd end = session.run();
      if (end == SessionEnd::kShutdown) {
        std::cerr << "dsmath-worker: " << session.why() << "\n";
        break;
      }
      if (end == SessionEnd::kRefused) {
        std::cerr << "dsmath-worker: error: " << session.why() << "\n";
        exit_code = 1;
        break;
      }
      if (session.registered()) backoff = std::chrono::duration<double>(0.25);
      std::cerr << "dsmath-worker: " << session.why() << " (" << o.coordinator << "); retrying in "
                << backoff.count() << " s\n";
      engine.wait_for_work(std::chrono::duration_cast<std::chrono::milliseconds>(backoff));
      backoff = std::min(backoff * 2, max_backoff);
    }
  }
  group.runner().shutdown();
  return exit_code;
}

}  // namespace dsmath
