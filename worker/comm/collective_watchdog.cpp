#include "worker/comm/collective_watchdog.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/core/error.h"
#include "worker/comm/mpi_session.h"

namespace dsmath {
namespace {

using Clock = std::chrono::steady_clock;

// Written by the MPI thread at every collective, read by the watchdog thread: atomics, no lock.
std::atomic<const char*> g_collective{nullptr};  // the collective in progress, or none
std::atomic<int64_t> g_since{0};                 // when it began (steady_clock ticks)
thread_local int t_depth = 0;                    // nesting on the calling thread

struct Watchdog {
  std::mutex mutex;
  std::condition_variable wake;
  int rank = 0;
  std::chrono::seconds limit{0};
  bool started = false;

  void run() {
    std::unique_lock lock(mutex);
    for (;;) {
      if (limit.count() == 0) {
        wake.wait(lock);
        continue;
      }
      // Checking four times per limit (at most once a second) bounds the overshoot.
      const auto period = std::min<Clock::duration>(std::chrono::seconds(1),
                                                    limit / 4 + std::chrono::milliseconds(1));
      wake.wait_for(lock, period);
      const char* collective = g_collective.load();
      if (collective == nullptr || limit.count() == 0) continue;
      const auto waited = Clock::now() - Clock::time_point(Clock::duration(g_since.load()));
      if (waited < limit) continue;
      // Still the same collective? (It may have ended and another begun since the load.)
      if (g_collective.load() != collective) continue;
      MpiSession::abort(1,
                        cat("dsmath-worker: error: rank ", rank, ": ", collective, " has waited ",
                            std::chrono::duration_cast<std::chrono::seconds>(waited).count(),
                            " s for the other ranks of its group (--collective-timeout-seconds ",
                            limit.count(), "): another rank is stuck or gone; aborting the group"));
    }
  }
};

Watchdog& watchdog() {
  static Watchdog* w = new Watchdog;  // never destroyed: its thread runs until the process ends
  return *w;
}

}  // namespace

void CollectiveWatchdog::start(int rank, std::chrono::seconds limit) {
  DSMATH_CHECK(limit.count() >= 0, "--collective-timeout-seconds must be 0 (off) or more, got ",
               limit.count());
  Watchdog& w = watchdog();
  std::lock_guard lock(w.mutex);
  w.rank = rank;
  w.limit = limit;
  if (limit.count() != 0 && !w.started) {
    w.started = true;
    std::thread([&w] { w.run(); }).detach();
  }
  w.wake.notify_all();
}

std::chrono::seconds CollectiveWatchdog::limit() {
  Watchdog& w = watchdog();
  std::lock_guard lock(w.mutex);
  return w.limit;
}

CollectiveWatchdog::Watch::Watch(const char* collective) {
  if (t_depth++ != 0) return;
  g_since.store(Clock::now().time_since_epoch().count());
  g_collective.store(collective);
}

CollectiveWatchdog::Watch::~Watch() {
  if (--t_depth == 0) g_collective.store(nullptr);
}

}  // namespace dsmath
