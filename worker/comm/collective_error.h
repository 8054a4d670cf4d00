// collectively(): error agreement across ranks. A rank that throws while the others go on to
// the next collective leaves them waiting forever; running the step through collectively()
// turns "some ranks failed" into "every rank throws the same error" instead.
//
//   collectively(comm, [&] { weights = load_shard(checkpoint, topology); });
//
// fn runs on every rank. If it throws on any rank, every rank throws CollectiveError (a
// dsmath::Error) with the message of the lowest failing rank, prefixed "rank R: ". fn itself must
// not call collectives (a rank that failed early would skip them and the others would wait in
// them).
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include "worker/comm/communicator.h"

namespace dsmath {

// What collectively() throws: the same message on every rank of the group, so each rank can exit
// cleanly (no rank is left waiting). Any other exception reached only the rank that threw it.
class CollectiveError : public Error {
 public:
  CollectiveError(int failing_rank, const std::string& message)
      : Error(cat("rank ", failing_rank, ": ", message)), failing_rank_(failing_rank) {}
  // The lowest rank where fn threw; its message is the one reported.
  int failing_rank() const { return failing_rank_; }

 private:
  int failing_rank_;
};

// Agreement over the ranks of `comm` (MPI initialized). Costs one small all-reduce when nothing
// failed, and a broadcast of the message when something did.
void collectively(MPI_Comm comm, const std::function<void()>& fn);

// Agreement over the ranks of `comm`, through its control communicator (MPI backend or NCCL).
// A communicator without one (a single process without MPI) just runs fn and prefixes errors.
void collectively(const Communicator& comm, const std::function<void()>& fn);

}  // namespace dsmath
