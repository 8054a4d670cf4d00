// CollectiveWatchdog: ends a rank's group when one collective has waited past a time limit.
//
// Why: an MPI or NCCL collective returns only when every rank of the group has joined it. When
// one rank hangs (a stopped process, a wedged GPU, a network path that drops packets without
// an error), the others wait forever: a supervisor sees a group that is alive yet answers
// nothing, and a dead rank is at least noticed by mpirun. The watchdog turns the hang into a
// failure: past the limit it prints which rank waited in which collective, and for how long,
// then aborts the job, so mpirun ends every rank and a supervisor restarts the group.
//
// One per process: a rank's collectives all run on its one MPI thread, one at a time, so the
// state is "which collective since when". Waits that are meant to be long (an idle follower
// waiting for its next step plan, loading weights) are not watched.
#pragma once

#include <chrono>

namespace dsmath {

class CollectiveWatchdog {
 public:
  // Starts the process's watchdog thread for `rank` (a limit of 0 turns it off). Later calls
  // change the limit. The default limit (none started) is off.
  static void start(int rank, std::chrono::seconds limit);
  static std::chrono::seconds limit();

  // Marks the lifetime of one collective. `collective` must be a string literal (it is kept).
  // Nested watches (a collective built from others) count as the outermost one.
  class Watch {
   public:
    explicit Watch(const char* collective);
    ~Watch();
    Watch(const Watch&) = delete;
    Watch& operator=(const Watch&) = delete;
  };
};

}  // namespace dsmath
