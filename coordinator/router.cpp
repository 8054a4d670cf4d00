#include "coordinator/router.h"

#include <algorithm>
#include <iostream>
#include <random>

#include "common/core/error.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

using worker::v1::CoordinatorMessage;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

CoordinatorMessage cancel_message(const std::string& key) {
  CoordinatorMessage m;
  m.mutable_cancel()->add_keys(key);
  return m;
}

std::string server_request_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  char id[32];
  std::snprintf(id, sizeof id, "req-%016llx", static_cast<unsigned long long>(rng()));
  return id;
}

}  // namespace

Router::Router(const ServedModel& model, const ServerLimits& limits, RouterOptions options,
               Metrics& metrics)
    : model_(model), limits_(limits), options_(options), metrics_(metrics) {}

void Router::run(Flush& flush) {
  for (auto& f : flush) f();
}

grpc::Status Router::submit(RequestPlan plan, bool streaming, std::shared_ptr<ResponseSink> sink,
                            std::string* key) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    if (draining_) return {grpc::StatusCode::UNAVAILABLE, "the server is shutting down"};
    if (groups_.empty())
      return {grpc::StatusCode::UNAVAILABLE,
              "no worker group is registered with this coordinator (start one with "
              "`mpirun -np N dsmath-worker serve --coordinator ADDR`)"};
    if (plan.request_id.empty()) {
      do plan.request_id = server_request_id();
      while (key_of_request_.count(plan.request_id));
    } else if (key_of_request_.count(plan.request_id)) {
      return {grpc::StatusCode::ALREADY_EXISTS,
              cat("request_id \"", plan.request_id, "\" is already used by a live request")};
    }
    int64_t waiting = 0;
    for (const auto& [k, l] : live_) waiting += !l.request->started();
    if (waiting >= limits_.max_queue)
      return {grpc::StatusCode::RESOURCE_EXHAUSTED,
              cat("the queue is full: ", waiting,
                  " requests wait for their first token (--max-queue ", limits_.max_queue, ")")};

    *key = cat("q", next_key_++);
    metrics_.add_prompt_tokens(int64_t(plan.prompt.size()));
    const std::string request_id = plan.request_id;
    auto request =
        std::make_unique<ServedRequest>(std::move(plan), model_, streaming, Clock::now());
    key_of_request_[request_id] = *key;
    Live& live = live_[*key];
    live.request = std::move(request);
    live.sink = std::move(sink);
    dispatch(*key, live, flush);  // a group exists, so this cannot fail
  }
  run(flush);
  return grpc::Status::OK;
}

bool Router::dispatch(const std::string& key, Live& live, Flush& flush) {
  Group* best = nullptr;
  std::string best_id;
  for (auto& [id, g] : groups_) {
    if (!best || g.assigned_samples < best->assigned_samples ||
        (g.assigned_samples == best->assigned_samples &&
         g.stats.kv_blocks_free() > best->stats.kv_blocks_free())) {
      best = &g;
      best_id = id;
    }
  }
  if (!best) return false;
  const RequestPlan& plan = live.request->plan();
  live.group = best_id;
  live.request->dispatched(Clock::now());
  best->assigned_samples += plan.n;
  CoordinatorMessage m;
  worker::v1::WorkItem* item = m.mutable_work()->add_items();
  item->set_key(key);
  item->set_rng_key(plan.rng_key);  // "": an interactive sample depends on its seed alone
  item->set_first_sample(plan.first_sample);
  item->mutable_prompt()->Add(plan.prompt.begin(), plan.prompt.end());
  *item->mutable_sampling() = to_proto(plan.params);
  item->set_n(plan.n);
  best->link->send(std::move(m));
  flush.push_back([link = best->link] { link->flush(); });
  return true;
}

void Router::end(std::map<std::string, Live>::iterator it, const grpc::Status& status,
                 std::optional<v1::GenerateStreamResponse> last, Flush& flush) {
  Live& live = it->second;
  auto group = groups_.find(live.group);
  if (group != groups_.end()) group->second.assigned_samples -= live.request->plan().n;
  const Clock::time_point now = Clock::now();
  if (last) live.sink->push(std::move(*last));
  live.sink->complete(status, live.request->streaming() || !status.ok()
                                  ? v1::GenerateResponse()
                                  : live.request->response(now));
  metrics_.count_request(status.error_code());
  metrics_.request_duration.observe(seconds(now - live.request->arrival()));
  flush.push_back([sink = live.sink] { sink->flush(); });
  key_of_request_.erase(live.request->plan().request_id);
  live_.erase(it);
}

void Router::client_gone(const std::string& key, const grpc::Status& why) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    auto it = live_.find(key);
    if (it == live_.end()) return;
    auto group = groups_.find(it->second.group);
    if (group != groups_.end()) {
      group->second.link->send(cancel_message(key));
      flush.push_back([link = group->second.link] { link->flush(); });
    }
    end(it, why, std::nullopt, flush);
  }
  run(flush);
}

bool Router::abort(const std::string& request_id) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    auto id = key_of_request_.find(request_id);
    if (id == key_of_request_.end()) return false;
    auto it = live_.find(id->second);
    auto group = groups_.find(it->second.group);
    if (group != groups_.end()) {
      group->second.link->send(cancel_message(it->first));
      flush.push_back([link = group->second.link] { link->flush(); });
    }
    ServedRequest::Update u = it->second.request->cancel(Clock::now());
    end(it, grpc::Status::OK, std::move(u.message), flush);
  }
  run(flush);
  return true;
}

grpc::Status Router::add_group(std::shared_ptr<GroupLink> link, const worker::v1::Register& info,
                               std::string* group_id) {
  if (info.protocol_version() != kWorkerLinkVersion)
    return {grpc::StatusCode::FAILED_PRECONDITION,
            cat("the worker speaks link protocol version ", info.protocol_version(),
                ", this coordinator version ", kWorkerLinkVersion)};
  if (info.fingerprint() != model_.fingerprint)
    return {grpc::StatusCode::FAILED_PRECONDITION,
            cat("the worker group's model (fingerprint ", info.fingerprint(),
                ") is not the one this coordinator serves (", model_.name, ", fingerprint ",
                model_.fingerprint, "): their config.json or tokenizer files differ")};
  if (info.tp() < 1 || info.kv_blocks() < 1 || info.block_size() < 1 || info.max_running() < 1)
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "the registration's tp, kv_blocks, block_size and max_running must be positive"};
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    if (draining_) return {grpc::StatusCode::UNAVAILABLE, "the coordinator is shutting down"};
    *group_id = cat("g", ++next_group_);
    Group& g = groups_[*group_id];
    g.link = link;
    g.info = info;
    g.last_seen = Clock::now();
    g.stats.set_kv_blocks_free(info.kv_blocks());
    CoordinatorMessage m;
    m.mutable_registered()->set_group_id(*group_id);
    m.mutable_registered()->set_heartbeat_interval_ms(int32_t(options_.heartbeat_interval.count()));
    link->send(std::move(m));
    flush.push_back([link] { link->flush(); });
    std::cerr << "dsmath-coordinator: worker group " << *group_id << " joined (" << info.host()
              << " pid " << info.pid() << ", tp " << info.tp() << " x pp " << std::max(1, info.pp())
              << ", " << info.kv_blocks() << " KV blocks)" << std::endl;
    update_serving();
  }
  run(flush);
  return grpc::Status::OK;
}

void Router::remove_group(const std::string& group_id, const std::string& why) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    drop_group(group_id, why, flush);
  }
  run(flush);
}

void Router::drop_group(const std::string& group_id, const std::string& why, Flush& flush) {
  auto g = groups_.find(group_id);
  if (g == groups_.end()) return;
  g->second.link->close({grpc::StatusCode::UNAVAILABLE, why});
  flush.push_back([link = g->second.link] { link->flush(); });
  groups_.erase(g);
  std::cerr << "dsmath-coordinator: worker group " << group_id << " left: " << why << std::endl;

  std::vector<std::string> orphans;
  for (const auto& [key, live] : live_)
    if (live.group == group_id) orphans.push_back(key);
  for (const std::string& key : orphans) {
    auto it = live_.find(key);
    Live& live = it->second;
    // Nothing reached the client yet: run it again elsewhere (the seed makes it the same).
    if (!live.request->streamed() && !draining_ && !groups_.empty()) {
      live.request->restart();
      dispatch(key, live, flush);
      continue;
    }
    end(it,
        {grpc::StatusCode::UNAVAILABLE,
         live.request->streamed()
             ? cat("worker group ", group_id, " was lost (", why,
                   ") after the request had started streaming")
             : cat("worker group ", group_id, " was lost (", why, ") and no other group is left")},
        std::nullopt, flush);
  }
  update_serving();
}

grpc::Status Router::on_message(const std::string& group_id,
                                const worker::v1::WorkerMessage& message) {
  Flush flush;
  grpc::Status status;
  {
    std::lock_guard lock(mutex_);
    auto g = groups_.find(group_id);
    if (g == groups_.end()) return grpc::Status::OK;  // already dropped
    g->second.last_seen = Clock::now();
    if (message.has_heartbeat()) {
      g->second.stats = message.heartbeat().stats();
    } else if (message.has_events()) {
      g->second.stats = message.events().stats();
      try {
        apply_events(group_id, g->second, message.events(), flush);
      } catch (const RequestError& e) {
        status = {grpc::StatusCode::INVALID_ARGUMENT,
                  cat("worker group ", group_id, " sent a malformed step: ", e.message)};
      }
    } else {
      status = {grpc::StatusCode::INVALID_ARGUMENT,
                cat("worker group ", group_id,
                    " sent a message that is neither events nor a "
                    "heartbeat (registration happens once)")};
    }
  }
  run(flush);
  return status;
}

void Router::apply_events(const std::string& group_id, Group& group,
                          const worker::v1::StepEvents& step, Flush& flush) {
  // Each request's events of the step, in order: one message per request per step.
  std::map<std::string, std::vector<const worker::v1::TokenEvent*>> by_key;
  for (const worker::v1::TokenEvent& e : step.events()) by_key[e.key()].push_back(&e);
  const Clock::time_point now = Clock::now();
  for (const auto& [key, events] : by_key) {
    auto it = live_.find(key);
    // Stale: a request that ended here (cancelled, stopped) while the worker still ran it.
    if (it == live_.end() || it->second.group != group_id) continue;
    ServedRequest::Update u = it->second.request->apply(events, now);
    metrics_.add_generated_tokens(u.new_tokens);
    if (u.time_to_first_token) metrics_.time_to_first_token.observe(*u.time_to_first_token);
    for (double s : u.inter_token_seconds) metrics_.inter_token_latency.observe(s);
    for (int32_t sample : u.stop_samples) {
      CoordinatorMessage m;
      m.mutable_stop()->set_key(key);
      m.mutable_stop()->set_sample_index(sample);
      group.link->send(std::move(m));
    }
    if (u.finished && !u.status.ok()) group.link->send(cancel_message(key));
    if (!u.stop_samples.empty() || (u.finished && !u.status.ok()))
      flush.push_back([link = group.link] { link->flush(); });
    if (u.finished) {
      end(it, u.status, std::move(u.message), flush);
    } else if (u.message) {
      it->second.sink->push(std::move(*u.message));
      flush.push_back([sink = it->second.sink] { sink->flush(); });
    }
  }
}

void Router::check_heartbeats() {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    const Clock::time_point now = Clock::now();
    std::vector<std::string> silent;
    for (const auto& [id, g] : groups_)
      if (now - g.last_seen > options_.heartbeat_timeout) silent.push_back(id);
    for (const std::string& id : silent)
      drop_group(
          id, cat("no message for ", seconds(options_.heartbeat_timeout), " s (heartbeat timeout)"),
          flush);
  }
  run(flush);
}

void Router::start_draining() {
  std::lock_guard lock(mutex_);
  draining_ = true;
  update_serving();
}

void Router::end_all(const grpc::Status& status) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    while (!live_.empty()) {
      auto it = live_.begin();
      auto group = groups_.find(it->second.group);
      if (group != groups_.end()) {
        group->second.link->send(cancel_message(it->first));
        flush.push_back([link = group->second.link] { link->flush(); });
      }
      end(it, status, std::nullopt, flush);
    }
  }
  run(flush);
}

void Router::shutdown_groups(const std::string& reason, bool tell_exit) {
  Flush flush;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, g] : groups_) {
      if (tell_exit) {
        CoordinatorMessage m;
        m.mutable_shutdown()->set_reason(reason);
        g.link->send(std::move(m));
      }
      g.link->close(tell_exit ? grpc::Status::OK
                              : grpc::Status(grpc::StatusCode::UNAVAILABLE, reason));
      flush.push_back([link = g.link] { link->flush(); });
    }
    groups_.clear();
    update_serving();
  }
  run(flush);
}

bool Router::serving() const {
  std::lock_guard lock(mutex_);
  return serving_;
}

void Router::set_serving_listener(std::function<void(bool)> listener) {
  std::lock_guard lock(mutex_);
  on_serving_changed_ = std::move(listener);
  on_serving_changed_(serving_);
}

void Router::update_serving() {
  const bool serving = !draining_ && !groups_.empty();
  if (serving == serving_) return;
  serving_ = serving;
  if (on_serving_changed_) on_serving_changed_(serving);
}

RouterSnapshot Router::snapshot() const {
  std::lock_guard lock(mutex_);
  RouterSnapshot s;
  s.live_requests = int64_t(live_.size());
  for (const auto& [k, l] : live_) s.queue_depth += !l.request->started();
  for (const auto& [id, g] : groups_)
    s.groups.push_back(
        {id, g.info.host(), g.info.tp(), g.info.kv_blocks(), g.assigned_samples, g.stats});
  return s;
}

}  // namespace dsmath
