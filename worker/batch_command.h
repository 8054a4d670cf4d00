// `dsmath-worker batch`: a batch job (common/jobs/batch_job) whose samples this worker group
// runs through its own engine: each run of consecutive missing samples of a problem is one
// engine request keyed (seed, id, first sample), and each finished sample goes straight to the
// job to be graded and written.
#pragma once

#include "common/jobs/batch_job.h"
#include "worker/comm/communicator.h"
#include "worker/model_group.h"

namespace dsmath {

struct BatchOptions {
  GroupOptions group;
  JobSpec job;  // job.model_dir is group.model_dir
};

int run_batch(const BatchOptions& options, Communicator& comm);

}  // namespace dsmath
