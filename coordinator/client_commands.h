// The `dsmath` client subcommands that talk to a coordinator over dsmath.v1:
//   generate  one prompt (or chat turn), streamed to the terminal; --format json prints the
//             unary GenerateResponse as JSON
//   chat      an interactive conversation in the DeepSeekMath template
//   info      GetModelInfo as JSON
//   health    grpc.health.v1 Check; exit 0 only when SERVING
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace dsmath {

struct ClientOptions {
  std::string server = "127.0.0.1:50051";
  double timeout_seconds = 0;   // 0: no deadline
  std::string auth_token_file;  // the bearer token to send; unset: $DSMATH_TOKEN, if set
  std::string tls_ca;           // verify the coordinator's TLS certificate against this CA
};

void add_client_flags(CLI::App& command, ClientOptions& options);

// Adds generate's / chat's flags to `command`; run them after parsing.
class GenerateCommand {
 public:
  explicit GenerateCommand(CLI::App& command, bool chat);
  int run() const;

 private:
  CLI::App& command_;
  bool interactive_;
  ClientOptions client_;
  std::string prompt_, format_ = "text", request_id_;
  bool chat_ = false, cot_ = false, ignore_eos_ = false;
  int32_t max_new_tokens_ = 0, top_k_ = 0, n_ = 1, logprobs_ = 0;
  float temperature_ = 0, top_p_ = 1, min_p_ = 0, repetition_penalty_ = 1;
  float presence_penalty_ = 0, frequency_penalty_ = 0;
  uint64_t seed_ = 0;
  std::vector<std::string> stop_;
  std::vector<int32_t> stop_token_ids_;
};

// `dsmath batch submit|status|wait|cancel|list`: batch jobs run by the coordinator.
class BatchCommands {
 public:
  explicit BatchCommands(CLI::App& batch);
  int run() const;

 private:
  CLI::App *submit_, *status_, *wait_, *cancel_, *list_;
  ClientOptions client_;
  std::string job_id_, input_, output_, summary_, template_, cot_, output_format_;
  std::string prompt_field_, id_field_, answer_field_;
  int32_t n_ = 1, top_k_ = 0, max_new_tokens_ = 0;
  float temperature_ = 1, top_p_ = 1, min_p_ = 0;
  uint64_t seed_ = 0;
  bool chat_ = false;
  std::vector<std::string> stop_;
};

int run_info(const ClientOptions& options);
int run_health(const ClientOptions& options, const std::string& service);

}  // namespace dsmath
