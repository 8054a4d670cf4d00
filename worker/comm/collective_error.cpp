#include "worker/comm/collective_error.h"

#include <exception>
#include <string>

#include "worker/comm/checked_call.h"

namespace dsmath {
namespace {

// Runs fn and returns what it threw, as text; ok is false when it threw anything at all (any
// exception must take part in the agreement, or the ranks that did not throw would hang).
struct Outcome {
  bool ok = true;
  std::string message;
};

// Error messages are sentences; the cap keeps the broadcast count well inside an int.
constexpr size_t kMaxMessage = 1 << 20;

Outcome run_local(const std::function<void()>& fn) {
  try {
    fn();
    return {};
  } catch (const std::exception& e) {
    return {false, e.what()};
  } catch (...) {
    return {false, "unknown exception"};
  }
}

}  // namespace

void collectively(MPI_Comm comm, const std::function<void()>& fn) {
  int size = 0, rank = 0;
  DSMATH_MPI_CHECK(MPI_Comm_size(comm, &size));
  DSMATH_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  const Outcome outcome = run_local(fn);

  // The lowest failing rank, or `size` when every rank succeeded.
  int mine = outcome.ok ? size : rank;
  int lowest = size;
  DSMATH_MPI_CHECK(MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, comm));
  if (lowest == size) return;

  std::string message = rank == lowest ? outcome.message : std::string();
  if (message.size() > kMaxMessage) message.resize(kMaxMessage);
  unsigned long long length = message.size();
  DSMATH_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UNSIGNED_LONG_LONG, lowest, comm));
  message.resize(length);
  if (length != 0) {
    DSMATH_MPI_CHECK(MPI_Bcast(message.data(), static_cast<int>(length), MPI_CHAR, lowest, comm));
  }
  throw CollectiveError(lowest, message);
}

void collectively(const Communicator& comm, const std::function<void()>& fn) {
  const MPI_Comm control = comm.control_comm();
  if (control != MPI_COMM_NULL) return collectively(control, fn);
  const Outcome outcome = run_local(fn);
  if (!outcome.ok) throw CollectiveError(comm.topology().rank, outcome.message);
}

}  // namespace dsmath
