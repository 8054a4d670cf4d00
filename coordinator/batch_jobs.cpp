#include "coordinator/batch_jobs.h"

#include <google/protobuf/util/json_util.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <iostream>
#include <random>

#include "common/core/error.h"
#include "common/jobs/batch_job.h"
#include "worker/serve/link_codec.h"

namespace dsmath {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr size_t kRequestsInFlight = 64;  // per job: enough to keep every group's engine busy
constexpr auto kStorageRetry = std::chrono::seconds(5);  // a paused job's wait between attempts
constexpr uintmax_t kRoomToResume = 1 << 20;             // free bytes a paused job waits for

std::string new_job_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  char id[32];
  std::snprintf(id, sizeof id, "job-%012llx",
                static_cast<unsigned long long>(rng() & 0xFFFFFFFFFFFFull));
  return id;
}

bool is_inside(const std::filesystem::path& path, const std::filesystem::path& dir) {
  auto p = path.begin();
  for (auto d = dir.begin(); d != dir.end(); ++d, ++p)
    if (p == path.end() || *p != *d) return false;
  return true;
}

// A run's samples as their deltas arrive.
struct RunState {
  SampleRun run;
  int64_t prompt_tokens = 0;
  struct Sample {
    std::string text;
    int64_t tokens = 0;
    double logprob = 0;
    bool done = false;
  };
  std::vector<Sample> samples;
};

// What the router hands a job's request: queued for the job's thread, which alone touches
// the BatchJob (the router calls sinks under its lock).
struct Event {
  std::string request_id;
  std::optional<v1::GenerateStreamResponse> message;
  std::optional<grpc::Status> end;
};

}  // namespace

struct BatchJobManager::Job {
  std::string id;
  v1::SubmitBatchRequest request;
  std::unique_ptr<BatchJob> batch;
  std::thread thread;
  std::atomic<bool> stop{false}, cancel{false};
  std::mutex mutex;  // guards state .. summary_json and the event queue
  std::condition_variable wake;
  std::deque<Event> events;
  std::string state = "running", error, summary_json;  // running, paused, completed, ...
  int attempt = 0;  // resumes after a pause: part of request ids, so stale events never match
  ProgressCounts counts;
  double tokens_per_second = 0, eta_seconds = 0;

  void status(v1::BatchJobStatus* s) {
    std::lock_guard lock(mutex);
    s->set_job_id(id);
    s->set_state(state);
    s->set_input(request.input());
    s->set_output(request.output());
    s->set_problems_done(counts.problems_done);
    s->set_problems_total(counts.problems_total);
    s->set_samples_done(counts.samples_done);
    s->set_samples_total(counts.samples_total);
    s->set_tokens_per_second(tokens_per_second);
    s->set_eta_seconds(eta_seconds);
    s->set_error(error);
    s->set_summary_json(summary_json);
  }
};

namespace {

struct JobSink : ResponseSink {
  JobSink(BatchJobManager::Job& job, std::string request_id)
      : job(job), request_id(std::move(request_id)) {}
  void push(v1::GenerateStreamResponse message) override {
    queue({request_id, std::move(message), {}});
  }
  void complete(grpc::Status status, v1::GenerateResponse) override {
    queue({request_id, std::nullopt, std::move(status)});
  }
  void flush() override {}
  void queue(Event e) {
    std::lock_guard lock(job.mutex);
    job.events.push_back(std::move(e));
    job.wake.notify_one();
  }
  BatchJobManager::Job& job;
  std::string request_id;
};

}  // namespace

BatchJobManager::BatchJobManager(std::filesystem::path data_dir, const ServedModel& model,
                                 Router& router)
    : model_(model), router_(router) {
  std::filesystem::create_directories(data_dir);
  data_dir_ = std::filesystem::canonical(data_dir);
  jobs_dir_ = data_dir_ / ".dsmath-jobs";
  std::filesystem::create_directories(jobs_dir_);
}

BatchJobManager::~BatchJobManager() {
  stop();
}

std::filesystem::path BatchJobManager::inside(const std::string& field,
                                              const std::string& path) const {
  if (path.empty()) throw RequestError{grpc::StatusCode::INVALID_ARGUMENT, cat(field, " is empty")};
  const std::filesystem::path full =
      std::filesystem::weakly_canonical(data_dir_ / std::filesystem::path(path));
  if (!is_inside(full, data_dir_))
    throw RequestError{grpc::StatusCode::INVALID_ARGUMENT,
                       cat(field, " \"", path, "\" is outside the coordinator's --data-dir (",
                           data_dir_.string(), ")")};
  return full;
}

std::unique_ptr<BatchJobManager::Job> BatchJobManager::open(const std::string& id,
                                                            const v1::SubmitBatchRequest& r) {
  JobSpec spec;
  spec.model_dir = model_.dir.string();
  spec.input = inside("input", r.input()).string();
  spec.output = inside("output", r.output()).string();
  if (!r.summary().empty()) spec.summary = inside("summary", r.summary()).string();
  if (!r.template_().empty()) spec.template_file = inside("template", r.template_()).string();
  spec.output_format = r.output_format().empty() ? "native" : r.output_format();
  spec.fields = {r.id_field(), r.prompt_field(), r.answer_field()};
  spec.chat = r.chat();
  spec.cot = r.cot();
  spec.n = r.n() > 0 ? r.n() : 1;
  if (r.has_temperature()) spec.sampling.temperature = r.temperature();
  if (r.has_top_p()) spec.sampling.top_p = r.top_p();
  if (r.has_top_k()) spec.sampling.top_k = r.top_k();
  if (r.has_min_p()) spec.sampling.min_p = r.min_p();
  if (r.has_max_new_tokens()) spec.sampling.max_new_tokens = r.max_new_tokens();
  if (r.has_seed()) spec.sampling.seed = r.seed();
  spec.stop.assign(r.stop().begin(), r.stop().end());
  auto job = std::make_unique<Job>();
  job->id = id;
  job->request = r;
  try {
    sampling_params(spec.sampling).validate();  // refused at Submit, not sample by sample
    job->batch = std::make_unique<BatchJob>(spec, model_.tokenizer);
  } catch (const StorageError& e) {
    throw RequestError{grpc::StatusCode::RESOURCE_EXHAUSTED, e.what()};
  } catch (const Error& e) {
    throw RequestError{grpc::StatusCode::INVALID_ARGUMENT, e.what()};
  }
  job->counts = job->batch->counts();
  return job;
}

void BatchJobManager::record(const Job& job) {
  std::string request;
  (void)google::protobuf::util::MessageToJsonString(job.request, &request);
  const Json j = {{"id", job.id},
                  {"request", Json::parse(request)},
                  {"state", job.state},
                  {"error", job.error},
                  {"counts",
                   {job.counts.problems_done, job.counts.problems_total, job.counts.samples_done,
                    job.counts.samples_total}},
                  {"summary", job.summary_json}};
  const std::filesystem::path path = jobs_dir_ / (job.id + ".json");
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    out.flush();
    // Never rename a short file over the last good record: that would lose the job.
    if (!out.good()) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail_storage("cannot write the job record ", tmp.string(), " (disk full?)");
    }
  }
  std::filesystem::rename(tmp, path);
}

void BatchJobManager::start(std::unique_ptr<Job> job) {
  Job& j = *job;
  std::lock_guard lock(mutex_);
  jobs_[j.id] = std::move(job);
  j.thread = std::thread([this, &j] { run(j); });
}

grpc::Status BatchJobManager::submit(const v1::SubmitBatchRequest& request,
                                     v1::BatchJobStatus* status) {
  try {
    auto job = open(new_job_id(), request);
    try {
      record(*job);
    } catch (const StorageError& e) {
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, e.what()};
    }
    Job& j = *job;
    start(std::move(job));
    j.status(status);
    std::cerr << "dsmath-coordinator: batch job " << j.id << " started: " << request.input()
              << " -> " << request.output() << std::endl;
    return grpc::Status::OK;
  } catch (const RequestError& e) {
    return e.status();
  }
}

void BatchJobManager::resume_all() {
  for (const auto& entry : std::filesystem::directory_iterator(jobs_dir_)) {
    if (entry.path().extension() != ".json") continue;
    try {
      const Json j = Json::parse(std::ifstream(entry.path()));
      v1::SubmitBatchRequest request;
      (void)google::protobuf::util::JsonStringToMessage(j.at("request").dump(), &request);
      const std::string state = j.value("state", "");
      if (state != "running" && state != "paused") {  // ended: known, for status and list
        auto ended = std::make_unique<Job>();
        ended->id = j.at("id").get<std::string>();
        ended->request = request;
        ended->state = j.at("state").get<std::string>();
        ended->error = j.value("error", "");
        ended->summary_json = j.value("summary", "");
        if (j.contains("counts") && j["counts"].size() == 4) {
          const Json& c = j["counts"];
          ended->counts = {c[0], c[1], c[2], c[3], 0};
        }
        std::lock_guard lock(mutex_);
        jobs_[ended->id] = std::move(ended);
        continue;
      }
      std::unique_ptr<Job> job;
      try {
        job = open(j.at("id").get<std::string>(), request);
        std::cerr << "dsmath-coordinator: batch job " << job->id << " resumed ("
                  << job->counts.samples_done << " of " << job->counts.samples_total
                  << " samples already in " << request.output() << ")" << std::endl;
      } catch (const RequestError& e) {
        if (e.code != grpc::StatusCode::RESOURCE_EXHAUSTED) throw;
        job = std::make_unique<Job>();  // the disk is still full: it waits, paused
        job->id = j.at("id").get<std::string>();
        job->request = request;
        job->state = "paused";
        job->error = e.message;
        std::cerr << "dsmath-coordinator: batch job " << job->id << " paused: " << e.message
                  << std::endl;
      }
      start(std::move(job));
    } catch (const std::exception& e) {
      std::cerr << "dsmath-coordinator: cannot resume " << entry.path().string() << ": " << e.what()
                << std::endl;
    } catch (const RequestError& e) {
      std::cerr << "dsmath-coordinator: cannot resume " << entry.path().string() << ": "
                << e.message << std::endl;
    }
  }
}

void BatchJobManager::stop() {
  std::lock_guard lock(mutex_);
  for (auto& [id, job] : jobs_) {
    job->stop = true;
    job->wake.notify_all();
  }
  for (auto& [id, job] : jobs_)
    if (job->thread.joinable()) job->thread.join();
}

grpc::Status BatchJobManager::get(const std::string& id, v1::BatchJobStatus* status) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {grpc::StatusCode::NOT_FOUND, cat("no batch job \"", id, "\"")};
  it->second->status(status);
  return grpc::Status::OK;
}

grpc::Status BatchJobManager::cancel(const std::string& id, v1::BatchJobStatus* status) {
  std::lock_guard lock(mutex_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {grpc::StatusCode::NOT_FOUND, cat("no batch job \"", id, "\"")};
  it->second->cancel = true;
  it->second->wake.notify_all();
  it->second->status(status);
  return grpc::Status::OK;
}

void BatchJobManager::list(v1::ListBatchJobsResponse* response) {
  std::lock_guard lock(mutex_);
  for (auto& [id, job] : jobs_) job->status(response->add_jobs());
}

// A job's thread. A write that fails for lack of room (StorageError) pauses the job instead of
// failing it: every sample written so far is intact, so the job waits until the output's file
// system has room, reopens its files (cutting a torn last line) and goes on where it stopped,
// each sample still written once.
void BatchJobManager::run(Job& job) {
  // A job resumed at start while the disk is still full has no BatchJob yet.
  bool running = job.batch || reopen_when_there_is_room(job);
  while (running) {
    try {
      run_requests(job);
      break;
    } catch (const StorageError& e) {
      {
        std::lock_guard lock(job.mutex);
        job.state = "paused";
        job.error = cat(e.what(), "; the job goes on when there is room (checked every ",
                        kStorageRetry.count(), " s)");
      }
      std::cerr << "dsmath-coordinator: batch job " << job.id << " paused: " << e.what()
                << std::endl;
      running = reopen_when_there_is_room(job);
      if (running)
        std::cerr << "dsmath-coordinator: batch job " << job.id << " resumed ("
                  << job.counts.samples_done << " of " << job.counts.samples_total
                  << " samples written)" << std::endl;
    }
  }
  try {
    record(job);
  } catch (const StorageError& e) {  // the last good record stays: the job resumes from it
    std::cerr << "dsmath-coordinator: batch job " << job.id << ": " << e.what() << std::endl;
  }
}

bool BatchJobManager::reopen_when_there_is_room(Job& job) {
  const std::filesystem::path dir = inside("output", job.request.output()).parent_path();
  job.batch.reset();  // closes the output (and its lock) until it is reopened
  for (;;) {
    {
      std::unique_lock lock(job.mutex);
      job.wake.wait_for(lock, kStorageRetry, [&] { return job.stop || job.cancel; });
      job.events.clear();  // of the aborted requests
      if (job.cancel) job.state = "cancelled";
    }
    if (job.stop || job.cancel) return false;  // stopping: a paused job resumes at the next start
    std::error_code error;
    const auto space = std::filesystem::space(dir, error);
    if (error || space.available < kRoomToResume) continue;
    try {
      job.batch = std::move(open(job.id, job.request)->batch);
      std::lock_guard lock(job.mutex);
      job.state = "running";
      job.error.clear();
      job.counts = job.batch->counts();
      ++job.attempt;
      return true;
    } catch (const RequestError& e) {
      if (e.code == grpc::StatusCode::RESOURCE_EXHAUSTED) continue;  // still no room
      std::lock_guard lock(job.mutex);
      job.state = "failed";
      job.error = e.message;
      return false;
    }
  }
}

void BatchJobManager::run_requests(Job& job) {
  BatchJob& batch = *job.batch;
  const Clock::time_point start = Clock::now();
  std::deque<SampleRun> todo;
  for (const SampleRun& r : batch.remaining(64)) todo.push_back(r);
  std::map<std::string, RunState> in_flight;  // by request id
  const auto samples_at_start = batch.counts().samples_done;
  auto retry_unfinished = [&](const RunState& rs) {
    for (int64_t i = 0; i < rs.run.count;) {
      if (rs.samples[size_t(i)].done) {
        ++i;
        continue;
      }
      SampleRun again{rs.run.problem, rs.run.first + i, 0};
      while (i < rs.run.count && !rs.samples[size_t(i)].done) ++again.count, ++i;
      todo.push_front(again);
    }
  };
  try {
    while (!job.stop && !job.cancel && (!todo.empty() || !in_flight.empty())) {
      // Keep requests in flight; the router spreads them over the groups.
      bool refused = false;
      while (!todo.empty() && in_flight.size() < kRequestsInFlight && !refused) {
        const SampleRun run = todo.front();
        const JobProblem& p = *run.problem;
        RequestPlan plan;
        plan.request_id = cat(job.id, "/", p.id, "#", run.first);
        if (job.attempt > 0) plan.request_id += cat("~", job.attempt);
        plan.prompt = batch.prompt_of(p);
        plan.params = sampling_params(batch.sampling_of(p));
        plan.n = int32_t(run.count);
        plan.stop = batch.stop_of(p);
        plan.rng_key = p.id;
        plan.first_sample = uint64_t(run.first);
        RunState rs{run, int64_t(plan.prompt.size()),
                    std::vector<RunState::Sample>(size_t(run.count))};
        const std::string request_id = plan.request_id;
        std::string key;
        const grpc::Status status =
            router_.submit(std::move(plan), true, std::make_shared<JobSink>(job, request_id), &key);
        if (status.ok()) {
          in_flight.emplace(request_id, std::move(rs));
          todo.pop_front();
        } else if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
          batch.refused(run, status.error_message());
          todo.pop_front();
        } else {
          refused = true;  // no group yet, or the queue is full: try again shortly
        }
      }
      std::deque<Event> events;
      {
        std::unique_lock lock(job.mutex);
        job.wake.wait_for(lock, std::chrono::milliseconds(refused ? 500 : 200),
                          [&] { return !job.events.empty() || job.stop || job.cancel; });
        events.swap(job.events);
      }
      for (Event& e : events) {
        auto it = in_flight.find(e.request_id);
        if (it == in_flight.end()) continue;
        RunState& rs = it->second;
        if (e.message) {
          for (const v1::Output& o : e.message->outputs()) {
            if (int64_t(o.index()) >= rs.run.count) continue;
            RunState::Sample& s = rs.samples[o.index()];
            s.text += o.text();
            s.tokens += o.token_ids_size();
            batch.generated_tokens(o.token_ids_size());
            for (const v1::LogprobEntry& l : o.logprobs()) s.logprob += l.logprob();
            if (o.finish_reason().empty() || s.done) continue;
            if (o.finish_reason() == "cancelled") continue;  // retried when the request ends
            FinishedSample done{s.text,   o.finish_reason(), o.stop_reason().stop_string(),
                                "",       rs.prompt_tokens,  s.tokens,
                                s.logprob};
            batch.finished(rs.run, o.index(), done);
            s.done = true;
          }
        }
        if (e.end) {
          if (!e.end->ok()) {
            if (e.end->error_code() == grpc::StatusCode::INVALID_ARGUMENT)
              batch.refused(rs.run, e.end->error_message());
            else
              retry_unfinished(rs);  // a group went away, ...: run what is missing again
          }
          in_flight.erase(it);
        }
      }
      batch.tick();
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      std::lock_guard lock(job.mutex);
      job.counts = batch.counts();
      job.tokens_per_second = seconds > 0 ? double(job.counts.tokens) / seconds : 0;
      const int64_t made = job.counts.samples_done - samples_at_start;
      job.eta_seconds = made > 0 ? double(job.counts.samples_total - job.counts.samples_done) *
                                       seconds / double(made)
                                 : 0;
    }
    for (const auto& [request_id, rs] : in_flight) router_.abort(request_id);
    if (job.stop && !job.cancel) return;  // the coordinator stops: resumed at its next start
    const Json summary = batch.finish(std::chrono::duration<double>(Clock::now() - start).count());
    std::lock_guard lock(job.mutex);
    job.state = job.cancel ? "cancelled" : "completed";
    job.summary_json = summary.dump();
    job.counts = batch.counts();
  } catch (const StorageError&) {
    for (const auto& [request_id, rs] : in_flight) router_.abort(request_id);
    throw;  // run() pauses the job
  } catch (const std::exception& e) {
    std::lock_guard lock(job.mutex);
    job.state = "failed";
    job.error = e.what();
    std::cerr << "dsmath-coordinator: batch job " << job.id << " failed: " << e.what() << std::endl;
  }
}

}  // namespace dsmath
