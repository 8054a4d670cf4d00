#include "worker/comm/mpi_session.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "worker/comm/checked_call.h"
#include "worker/comm/collective_error.h"

// Under AddressSanitizer (launch/sanitize.sh asan), the processes that run MPI record each
// allocation's whole stack (the DWARF unwinder) rather than following frame pointers. Open MPI
// never frees some of what its plugins allocate, and dlcloses those plugins, some already in
// MPI_Init: their frames then name no module, and frame pointers stop at them. The whole stack
// reaches the libmpi / libopen-pal frames that tests/sanitizers/lsan.supp names, so only Open
// MPI's own leaks are suppressed. ASAN_OPTIONS still overrides it.
#if defined(__SANITIZE_ADDRESS__)
extern "C" const char* __asan_default_options() {
  return "fast_unwind_on_malloc=0";
}
#endif

namespace dsmath {

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = MPI_THREAD_SINGLE;
    // Before MPI_Init the default error handler is fatal, so a failure here ends the process
    // with MPI's own message; the check matters only for implementations that return.
    DSMATH_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      owns_mpi_ = false;
      fail("MPI provides thread level ", provided, ", dsmath needs MPI_THREAD_FUNNELED");
    }
  }
  topology_ = Topology::from_mpi(MPI_COMM_WORLD);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
}

int MpiSession::run(const std::string& program, const std::function<int()>& body) const {
  std::string failure;
  try {
    return body();
  } catch (const CollectiveError& e) {
    if (topology_.is_driver()) std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    failure = e.what();
  } catch (...) {
    failure = "unknown exception";
  }
  if (topology_.world_size == 1) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), failure.c_str());
    return 1;
  }
  abort(1, cat(program, ": error: rank ", topology_.rank, ": ", failure));
}

void MpiSession::abort(int exit_code, const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort should not return; never let a caller continue if it does
}

int MpiSession::set_threads_per_rank(int threads, MPI_Comm comm) {
  // The ranks of this node bound to exactly the cores this one is (all of them under
  // --bind-to none, none other under --bind-to core) split those cores.
  cpu_set_t mine;
  CPU_ZERO(&mine);
  if (sched_getaffinity(0, sizeof mine, &mine) != 0) {
    for (int c = 0; c < omp_get_num_procs(); ++c) CPU_SET(c, &mine);
  }
  MPI_Comm node = MPI_COMM_NULL;
  DSMATH_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int size = 1;
  DSMATH_MPI_CHECK(MPI_Comm_size(node, &size));
  std::vector<cpu_set_t> all(static_cast<size_t>(size));
  DSMATH_MPI_CHECK(
      MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, node));
  DSMATH_MPI_CHECK(MPI_Comm_free(&node));
  const int sharing = int(std::count_if(all.begin(), all.end(),
                                        [&](const cpu_set_t& s) { return CPU_EQUAL(&s, &mine); }));
  const int share = std::max(1, CPU_COUNT(&mine) / sharing);
  int use = threads > 0 ? threads : share;
  if (use > share) {
    std::fprintf(stderr,
                 "dsmath: --threads %d is more than this rank's share of cores (%d: %d cores it "
                 "may run on, shared by %d ranks); using %d\n",
                 threads, share, CPU_COUNT(&mine), sharing, share);
    use = share;
  }
  omp_set_num_threads(use);
  return use;
}

int MpiSession::ranks_on_this_node(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  DSMATH_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int size = 1;
  DSMATH_MPI_CHECK(MPI_Comm_size(node, &size));
  DSMATH_MPI_CHECK(MPI_Comm_free(&node));
  return size;
}

int MpiSession::local_rank(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  DSMATH_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int rank = 0;
  DSMATH_MPI_CHECK(MPI_Comm_rank(node, &rank));
  DSMATH_MPI_CHECK(MPI_Comm_free(&node));
  return rank;
}

}  // namespace dsmath
