// Batch jobs run by the coordinator (dsmath.v1.BatchJobs): the same common/jobs/BatchJob as
// `dsmath-worker batch`, its runs sent through the router to every registered worker group
// (keyed (seed, id, sample index) as offline, so the samples are the same). Job files live
// under --data-dir only; each job's request and state are recorded in DATA/.dsmath-jobs, and
// jobs that were running when the coordinator stopped resume from their output when it starts.
#pragma once

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "coordinator/router.h"
#include "proto/dsmath.grpc.pb.h"

namespace dsmath {

class BatchJobManager {
 public:
  BatchJobManager(std::filesystem::path data_dir, const ServedModel& model, Router& router);
  ~BatchJobManager();  // stop()
  // Starts the jobs recorded as running (after a restart).
  void resume_all();
  // Stops every job's thread; the jobs stay "running" on disk and resume at the next start.
  void stop();

  grpc::Status submit(const v1::SubmitBatchRequest& request, v1::BatchJobStatus* status);
  grpc::Status get(const std::string& job_id, v1::BatchJobStatus* status);
  grpc::Status cancel(const std::string& job_id, v1::BatchJobStatus* status);
  void list(v1::ListBatchJobsResponse* response);

  struct Job;  // one job: its BatchJob, thread, state and the events of its requests

 private:
  // `path` resolved under the data dir; INVALID_ARGUMENT naming `field` when it leaves it.
  std::filesystem::path inside(const std::string& field, const std::string& path) const;
  std::unique_ptr<Job> open(const std::string& id, const v1::SubmitBatchRequest& request);
  void start(std::unique_ptr<Job> job);
  void run(Job& job);           // the job's thread: run_requests, pausing while the disk is full
  void run_requests(Job& job);  // until done, cancelled or stopped; StorageError: pause
  bool reopen_when_there_is_room(Job& job);  // false: stopped, cancelled or failed meanwhile
  void record(const Job& job);

  std::filesystem::path data_dir_, jobs_dir_;
  const ServedModel& model_;
  Router& router_;
  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
};

}  // namespace dsmath
