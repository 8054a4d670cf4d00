// `dsmath-worker serve`: the group's driver (rank 0) dials the coordinator and holds one
// bidirectional stream (proto/worker.proto): it registers, heartbeats, takes work and
// cancellations, and sends each engine step's events for all its sequences in one message.
// The other ranks follow the engine's step plans as in `generate`. When the coordinator goes
// away the group cancels what it was running and keeps reconnecting with back-off; it exits 0
// when the coordinator tells it to shut down, 1 when the coordinator refuses it.
#pragma once

#include <string>

#include "coordinator/tls.h"
#include "worker/comm/communicator.h"
#include "worker/model_group.h"

namespace dsmath {

struct ServeOptions {
  GroupOptions group;
  std::string coordinator;  // host:port of the coordinator's --worker-listen
  double max_backoff_seconds = 10;
  std::string secret_file;  // --worker-secret-file: what the coordinator's asks for
  TlsFiles tls;             // --tls-ca: verify the coordinator; --tls-cert/--tls-key: mutual TLS
};

int run_serve(const ServeOptions& options, Communicator& comm);

}  // namespace dsmath
