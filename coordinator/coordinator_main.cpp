// dsmath-coordinator: the public gRPC API (dsmath.v1.Generation, health, reflection) in front
// of the worker groups that dial in (dsmath.worker.v1.WorkerLink on --worker-listen).
//   dsmath-coordinator --model DIR [--listen 127.0.0.1:50051] [--worker-listen 127.0.0.1:50052]
//                      [--metrics-listen 127.0.0.1:9090] [--auth-token-file F] [--max-queue N] ...
// SIGTERM / SIGINT: health turns NOT_SERVING, new requests get UNAVAILABLE, running ones have
// --shutdown-grace-seconds to finish, the groups are told to exit, and the process exits 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <optional>
#include <thread>

#include "common/core/error.h"
#include "coordinator/generation_service.h"
#include "coordinator/metrics_http.h"
#include "coordinator/tls.h"

namespace {

using namespace dsmath;

constexpr const char* kGenerationService = "dsmath.v1.Generation";

struct Options {
  std::string model_dir;
  std::string listen = "127.0.0.1:50051";
  std::string worker_listen = "127.0.0.1:50052";
  std::string metrics_listen;
  std::string data_dir = ".";
  std::string auth_token_file, worker_secret_file;
  TlsFiles tls;  // --tls-cert, --tls-key: both ports; --tls-ca: workers must present a cert
  ServerLimits limits;
  double heartbeat_timeout_seconds = 10;
  double shutdown_grace_seconds = 30;
  bool keep_workers = false;
};

// Binds `address` (port 0: a free one) and returns the port, or throws naming the flag.
std::unique_ptr<grpc::Server> start_server(grpc::ServerBuilder& builder, const std::string& flag,
                                           const std::string& address,
                                           std::shared_ptr<grpc::ServerCredentials> credentials,
                                           int* port) {
  builder.AddListeningPort(address, std::move(credentials), port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  DSMATH_CHECK(server && *port > 0, flag, ": cannot listen on ", address);
  return server;
}

std::string with_port(const std::string& address, int port) {
  return address.substr(0, address.rfind(':') + 1) + std::to_string(port);
}

// Whether `address` (host:port, [v6]:port) binds only this machine's loopback interface.
bool loopback_only(const std::string& address) {
  const std::string host = address.substr(0, address.rfind(':'));
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

int run(const Options& o, const sigset_t& signals) {
  const ServedModel model = ServedModel::load(o.model_dir);
  Metrics metrics;
  RouterOptions router_options;
  router_options.heartbeat_timeout =
      std::chrono::milliseconds(int64_t(o.heartbeat_timeout_seconds * 1000));
  Router router(model, o.limits, router_options, metrics);
  const BearerAuth auth =
      o.auth_token_file.empty()
          ? BearerAuth()
          : BearerAuth(BearerAuth::read_token_file(o.auth_token_file, "--auth-token-file"),
                       "the dsmath CLI: --auth-token-file FILE or DSMATH_TOKEN");
  const BearerAuth worker_auth =
      o.worker_secret_file.empty()
          ? BearerAuth()
          : BearerAuth(BearerAuth::read_token_file(o.worker_secret_file, "--worker-secret-file"),
                       "dsmath-worker serve --worker-secret-file FILE");
  const bool tls = !o.tls.cert.empty();
  if (!loopback_only(o.listen) && (!auth.enabled() || !tls))
    std::cerr << "dsmath-coordinator: warning: --listen " << o.listen
              << " is reachable from other machines"
              << (auth.enabled() ? ""
                                 : "; without --auth-token-file anyone who reaches it can use it")
              << (tls ? "" : "; without --tls-cert and --tls-key its traffic is plaintext")
              << std::endl;
  if (!loopback_only(o.worker_listen) && (o.worker_secret_file.empty() || o.tls.ca.empty()))
    std::cerr << "dsmath-coordinator: warning: --worker-listen " << o.worker_listen
              << " is reachable from other machines; any process there can join as a worker "
                 "group unless it needs --worker-secret-file or a certificate (--tls-ca)"
              << std::endl;
  GenerationService generation(model, o.limits, router, metrics, auth);
  WorkerLinkService link(router, worker_auth);
  BatchJobManager jobs(o.data_dir, model, router);
  BatchJobsService batch(jobs, auth);

  jobs.resume_all();  // before the API answers: a client asking for its job finds it
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  int public_port = 0, worker_port = 0;
  grpc::ServerBuilder public_builder;
  public_builder.RegisterService(&generation);
  public_builder.RegisterService(&batch);
  public_builder.SetMaxReceiveMessageSize(o.limits.max_message_bytes);  // more: RESOURCE_EXHAUSTED
  std::unique_ptr<grpc::Server> server =
      start_server(public_builder, "--listen", o.listen,
                   server_credentials(o.tls, /*require_client=*/false), &public_port);
  grpc::ServerBuilder worker_builder;
  worker_builder.RegisterService(&link);
  worker_builder.SetMaxReceiveMessageSize(-1);  // a busy group's step can be large
  worker_builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  worker_builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  std::unique_ptr<grpc::Server> worker_server =
      start_server(worker_builder, "--worker-listen", o.worker_listen,
                   server_credentials(o.tls, /*require_client=*/true), &worker_port);

  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  router.set_serving_listener(
      [health](bool serving) { health->SetServingStatus(kGenerationService, serving); });

  std::optional<MetricsHttpServer> metrics_http;
  if (!o.metrics_listen.empty())
    metrics_http.emplace(o.metrics_listen, [&] { return metrics.render(router.snapshot()); });

  std::cerr << "dsmath-coordinator: serving " << model.name << " (fingerprint " << model.fingerprint
            << ") on " << with_port(o.listen, public_port) << "; workers join at "
            << with_port(o.worker_listen, worker_port);
  if (metrics_http)
    std::cerr << "; metrics on " << with_port(o.metrics_listen, metrics_http->port());
  std::cerr << std::endl;

  // The heartbeat watchdog, and the wait for a signal.
  std::atomic<bool> stop{false};
  std::thread watchdog([&] {
    while (!stop) {
      router.check_heartbeats();
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  });
  int signal = 0;
  sigwait(&signals, &signal);
  std::cerr << "dsmath-coordinator: " << strsignal(signal) << ": draining (up to "
            << o.shutdown_grace_seconds << " s)" << std::endl;
  jobs.stop();  // running jobs stay recorded and resume at the next start
  router.start_draining();
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(o.shutdown_grace_seconds));
  const timespec poll{0, 50'000'000};
  while (router.snapshot().live_requests > 0 && Clock::now() < deadline) {
    if (sigtimedwait(&signals, nullptr, &poll) > 0) break;  // a second signal: stop waiting
  }
  router.end_all(
      {grpc::StatusCode::UNAVAILABLE, "the server shut down before the request finished"});
  router.shutdown_groups("the coordinator is shutting down", /*tell_exit=*/!o.keep_workers);
  health->SetServingStatus(false);
  const auto soon = std::chrono::system_clock::now() + std::chrono::seconds(3);
  worker_server->Shutdown(soon);
  server->Shutdown(soon);
  stop = true;
  watchdog.join();
  std::cerr << "dsmath-coordinator: stopped" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"dsmath-coordinator: the dsmath.v1 gRPC API in front of worker groups"};
  app.add_option("--model", o.model_dir,
                 "Checkpoint directory (config.json and tokenizer files are read; weights not)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--listen", o.listen, "Public gRPC address")->capture_default_str();
  app.add_option("--auth-token-file", o.auth_token_file,
                 "File holding the bearer token every API call must carry (authorization: "
                 "Bearer <token>); the health service stays open")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", o.tls.cert, "PEM certificate (chain) both ports serve TLS with")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", o.tls.key, "PEM private key of --tls-cert")->check(CLI::ExistingFile);
  app.add_option("--tls-ca", o.tls.ca,
                 "PEM CA: worker groups must present a certificate it signed (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--worker-secret-file", o.worker_secret_file,
                 "File holding the secret a worker group must present to join "
                 "(dsmath-worker serve --worker-secret-file)")
      ->check(CLI::ExistingFile);
  app.add_option("--worker-listen", o.worker_listen, "Address worker groups dial")
      ->capture_default_str();
  app.add_option("--metrics-listen", o.metrics_listen,
                 "Prometheus endpoint (host:port), off when not given");
  app.add_option("--data-dir", o.data_dir,
                 "Batch jobs read and write files under this directory only")
      ->capture_default_str();
  app.add_option("--max-queue", o.limits.max_queue,
                 "Most requests waiting for their first token; more get RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-prompt-tokens", o.limits.max_prompt_tokens,
                 "Longest prompt in tokens (default: the model's context - 1)")
      ->check(CLI::PositiveNumber);
  app.add_option("--max-message-bytes", o.limits.max_message_bytes,
                 "Largest request message on the public API; larger ones get RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(CLI::Range(1024, 1 << 30));
  app.add_option("--max-n", o.limits.max_n, "Largest n per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--max-new-tokens", o.limits.max_new_tokens, "Largest max_new_tokens")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--default-max-new-tokens", o.limits.default_max_new_tokens,
                 "When neither the request nor generation_config.json sets it")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-timeout-seconds", o.heartbeat_timeout_seconds,
                 "A group silent this long is dropped (groups send a heartbeat every second)")
      ->capture_default_str()
      ->check(CLI::Range(3.0, 86400.0));
  app.add_option("--shutdown-grace-seconds", o.shutdown_grace_seconds,
                 "On SIGTERM, how long running requests may take to finish")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--keep-workers", o.keep_workers,
               "On shutdown, leave worker groups running (they reconnect to the next coordinator)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Signals go to sigwait in run(), never to a gRPC thread: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  try {
    return run(o, signals);
  } catch (const Error& e) {
    std::cerr << "dsmath-coordinator: error: " << e.what() << std::endl;
    return 1;
  }
}
