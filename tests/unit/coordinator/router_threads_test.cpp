// The router and the outbox under threads, as the coordinator runs them but without gRPC in
// between (so that ThreadSanitizer, launch/sanitize.sh tsan, sees every hand-off): client
// threads submit, cancel and abort; one thread per worker group answers its work with step
// events; a writer thread completes each stream's writes later, as gRPC's OnWriteDone does;
// groups leave and join meanwhile. Every accepted request ends exactly once and none is left.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "coordinator/outbox.h"
#include "coordinator/router.h"
#include "tests/unit/coordinator/served_model_fixture.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

using namespace std::chrono_literals;

// Runs what is queued, in order, on its own thread: gRPC's completion of a write.
class Writer {
 public:
  Writer() : thread_([this] { run(); }) {}
  ~Writer() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> f) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(f));
    }
    wake_.notify_all();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::function<void()> f = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      f();
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// A call's side: the router's messages go through an Outbox, as in StreamCall.
class Sink : public ResponseSink, public std::enable_shared_from_this<Sink> {
 public:
  explicit Sink(Writer& writer) : writer_(writer) {}
  void push(v1::GenerateStreamResponse m) override { outbox_.push(std::move(m)); }
  void complete(grpc::Status s, v1::GenerateResponse) override {
    ++completions_;
    outbox_.close(std::move(s));
  }
  void flush() override {
    outbox_.pump(
        [this](const v1::GenerateStreamResponse* m) {
          written_bytes_ += m->ByteSizeLong();  // what gRPC would serialise, on this thread
          writer_.post([self = shared_from_this()] {
            self->outbox_.written(true);
            self->flush();
          });
        },
        [this](const grpc::Status&) { ++finishes_; });
  }
  int completions() const { return completions_; }
  int finishes() const { return finishes_; }

 private:
  Writer& writer_;
  Outbox<v1::GenerateStreamResponse> outbox_;
  std::atomic<int> completions_{0}, finishes_{0};
  std::atomic<size_t> written_bytes_{0};
};

// A worker group: its link queues the router's messages; its thread runs every request it was
// given, a token per sample per step, until max_new_tokens, a cancel, or the link's close.
class Group : public GroupLink {
 public:
  explicit Group(Router& router) : router_(router) {}
  ~Group() override { join(); }

  void send(worker::v1::CoordinatorMessage m) override {
    std::lock_guard lock(mutex_);
    inbox_.push_back(std::move(m));
    wake_.notify_all();
  }
  void close(grpc::Status) override {
    std::lock_guard lock(mutex_);
    closed_ = true;
    wake_.notify_all();
  }
  void flush() override {}

  // Registers with the router and starts answering; false when the router refused.
  bool start(std::shared_ptr<Group> self) {
    if (!router_.add_group(self, testing::group_registration(1000, 64), &id_).ok()) return false;
    thread_ = std::thread([this] { run(); });
    return true;
  }
  const std::string& id() const { return id_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Running {
    int32_t samples = 0, tokens = 0, max_tokens = 0;
  };

  void run() {
    std::map<std::string, Running> running;
    for (;;) {
      std::deque<worker::v1::CoordinatorMessage> inbox;
      {
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, 2ms, [&] { return closed_ || !inbox_.empty(); });
        if (closed_) return;
        inbox.swap(inbox_);
      }
      for (const auto& m : inbox) {
        for (const auto& item : m.work().items())
          running[item.key()] = {item.n(), 0, int32_t(item.sampling().max_new_tokens())};
        for (const auto& key : m.cancel().keys()) running.erase(key);
      }
      if (running.empty()) continue;
      worker::v1::WorkerMessage step;
      for (auto it = running.begin(); it != running.end();) {
        Running& r = it->second;
        const bool last = ++r.tokens >= r.max_tokens;
        for (int32_t s = 0; s < r.samples; ++s) {
          worker::v1::TokenEvent* e = step.mutable_events()->add_events();
          e->set_key(it->first);
          e->set_sample_index(s);
          e->set_has_token(true);
          e->set_token_id(11 + r.tokens);
          if (last) e->set_finish(worker::v1::FINISH_LENGTH);
        }
        it = last ? running.erase(it) : std::next(it);
      }
      EXPECT_TRUE(router_.on_message(id_, step).ok());
    }
  }

  Router& router_;
  std::string id_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<worker::v1::CoordinatorMessage> inbox_;
  bool closed_ = false;
  std::thread thread_;
};

TEST(RouterThreads, ClientsGroupsAndWritesOnTheirOwnThreadsEndEveryRequestOnce) {
  Metrics metrics;
  ServerLimits limits;
  limits.max_queue = 16;
  Router router(testing::served_model(), limits, RouterOptions{}, metrics);
  Writer writer;

  std::mutex groups_mutex;
  std::vector<std::shared_ptr<Group>> groups;  // all ever started, joined at the end
  auto add_group = [&] {
    auto g = std::make_shared<Group>(router);
    ASSERT_TRUE(g->start(g));
    std::lock_guard lock(groups_mutex);
    groups.push_back(g);
  };
  add_group();
  add_group();

  constexpr int kClients = 4, kRequestsEach = 40;
  std::mutex sinks_mutex;
  std::vector<std::shared_ptr<Sink>> accepted;
  std::atomic<int> refused{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(c);
      for (int i = 0; i < kRequestsEach; ++i) {
        RequestPlan p;
        p.request_id = "c" + std::to_string(c) + "-" + std::to_string(i);
        p.prompt = {100000, 5, 6};
        p.params.max_new_tokens = 1 + int32_t(rng() % 6);
        p.n = 1 + int32_t(rng() % 3);
        auto sink = std::make_shared<Sink>(writer);
        std::string key;
        const grpc::Status s = router.submit(std::move(p), /*streaming=*/i % 3 != 0, sink, &key);
        if (!s.ok()) {  // a full queue, or no group at that moment
          EXPECT_TRUE(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                      s.error_code() == grpc::StatusCode::UNAVAILABLE)
              << s.error_message();
          ++refused;
          std::this_thread::sleep_for(1ms);
          continue;
        }
        sink->flush();  // as StreamCall::start does
        {
          std::lock_guard lock(sinks_mutex);
          accepted.push_back(sink);
        }
        switch (rng() % 8) {
          case 0:
            router.client_gone(key, {grpc::StatusCode::CANCELLED, "gone"});
            break;
          case 1:
            router.abort("c" + std::to_string(c) + "-" + std::to_string(i));
            break;
          default:
            break;
        }
        if (rng() % 4 == 0) std::this_thread::sleep_for(1ms);
      }
    });
  }
  // Groups come and go while the clients run; their requests move or end UNAVAILABLE.
  std::thread churn([&] {
    for (int round = 0; round < 6; ++round) {
      std::this_thread::sleep_for(5ms);
      std::string id;
      {
        std::lock_guard lock(groups_mutex);
        id = groups[size_t(round)]->id();
      }
      router.remove_group(id, "churn");
      (void)router.snapshot();
      router.check_heartbeats();
      add_group();
    }
  });
  for (auto& t : clients) t.join();
  churn.join();

  // Every accepted request ends: by its tokens, a cancel, an abort or a lost group.
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  auto all_finished = [&] {
    std::lock_guard lock(sinks_mutex);
    for (const auto& s : accepted)
      if (s->finishes() == 0) return false;
    return true;
  };
  while (!all_finished() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(all_finished());
  EXPECT_EQ(router.snapshot().live_requests, 0);

  router.shutdown_groups("done", /*tell_exit=*/true);
  for (auto& g : groups) g->join();
  EXPECT_GT(accepted.size(), 0u);
  for (const auto& s : accepted) {
    EXPECT_EQ(s->completions(), 1);
    EXPECT_EQ(s->finishes(), 1);
  }
  std::cout << accepted.size() << " requests accepted, " << refused << " refused\n";
}

}  // namespace
}  // namespace dsmath
