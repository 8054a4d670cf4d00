// MpiSession: RAII for MPI_Init_thread / MPI_Finalize. Construct one at the top of main(); it
// works under mpirun and as a singleton when the program is started directly. MPI calls are
// made from the main thread only (MPI_THREAD_FUNNELED); OpenMP threads never call MPI.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include "worker/comm/topology.h"

namespace dsmath {

class MpiSession {
 public:
  // Initializes MPI unless something else already did (then this session leaves finalizing to
  // that owner). Throws dsmath::Error when MPI cannot give MPI_THREAD_FUNNELED.
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // The layout of MPI_COMM_WORLD.
  const Topology& topology() const { return topology_; }

  // The body of a multi-rank main(); returns the exit code for this rank:
  //   int main(int argc, char** argv) {
  //     dsmath::MpiSession mpi(&argc, &argv);
  //     return mpi.run("dsmath-worker", [&] { ...; return 0; });
  //   }
  // A CollectiveError reached every rank: rank 0 prints it and every rank returns 1, a clean
  // exit. Any other exception reached this rank only, while the others may wait for it in a
  // collective: it is printed with the rank and the whole job ends through abort().
  // Messages read "<program>: error: rank R: ...", one line each.
  int run(const std::string& program, const std::function<int()>& body) const;

  // Ends every rank of the job with `exit_code` after printing `message` (a line) to stderr; for
  // errors that other ranks cannot learn about through collectively() (they are stuck in a
  // collective).
  [[noreturn]] static void abort(int exit_code, const std::string& message);

  // How many ranks of `comm` share this node (collective over `comm`): ranks divide the
  // node's cores between them instead of each starting a thread per core.
  static int ranks_on_this_node(MPI_Comm comm = MPI_COMM_WORLD);
  // This rank's index among the ranks of `comm` on its node (0 .. ranks_on_this_node - 1).
  static int local_rank(MPI_Comm comm = MPI_COMM_WORLD);

  // Sets this rank's OpenMP threads so that ranks x threads never exceed the cores mpirun gives
  // the node: the cores this rank may run on (its binding: one core under --bind-to core, the
  // node under --bind-to none) divided by the ranks of `comm` that share them, at least 1.
  // `threads` > 0 asks for that many; more than the share is cut to it with a warning, since
  // oversubscribed threads spin against each other at every barrier. Returns the count.
  // Collective over `comm`.
  static int set_threads_per_rank(int threads = 0, MPI_Comm comm = MPI_COMM_WORLD);

 private:
  bool owns_mpi_ = false;
  Topology topology_;
};

}  // namespace dsmath
