#include "coordinator/client_commands.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>

#include "coordinator/auth.h"
#include "coordinator/status_name.h"
#include "coordinator/tls.h"
#include "proto/dsmath.grpc.pb.h"
#include "proto/grpc/health/v1/health.grpc.pb.h"

namespace dsmath {
namespace {

std::string to_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;  // output 0 shows its index, empty texts show
  std::string json;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

int report(const grpc::Status& status) {
  if (status.ok()) return 0;
  std::cerr << "dsmath: " << status_code_name(status.error_code()) << ": " << status.error_message()
            << "\n";
  return 1;
}

// The bearer token for the coordinator's --auth-token-file: --auth-token-file, else
// $DSMATH_TOKEN, else none.
std::string auth_token(const ClientOptions& o) {
  if (!o.auth_token_file.empty())
    return BearerAuth::read_token_file(o.auth_token_file, "--auth-token-file");
  const char* env = std::getenv("DSMATH_TOKEN");
  return env ? std::string(env) : std::string();
}

std::shared_ptr<grpc::ChannelCredentials> credentials(const ClientOptions& o) {
  TlsFiles files;
  files.ca = o.tls_ca;
  return channel_credentials(files);
}

void prepare(grpc::ClientContext& context, const ClientOptions& o) {
  if (o.timeout_seconds > 0)
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(int64_t(o.timeout_seconds * 1000)));
  if (const std::string token = auth_token(o); !token.empty())
    context.AddMetadata("authorization", "Bearer " + token);
}

std::unique_ptr<v1::Generation::Stub> generation_stub(const ClientOptions& o) {
  return v1::Generation::NewStub(grpc::CreateChannel(o.server, credentials(o)));
}

// Streams one request: n = 1 prints text as it arrives; n > 1 prints each sample when done.
// Returns the status and, through `reply`, the text of output 0.
grpc::Status stream(v1::Generation::Stub& stub, const ClientOptions& o,
                    const v1::GenerateRequest& request, std::string* reply) {
  grpc::ClientContext context;
  prepare(context, o);
  auto reader = stub.GenerateStream(&context, request);
  const bool live = !request.has_n() || request.n() == 1;
  std::map<uint32_t, std::string> texts;
  v1::GenerateStreamResponse message;
  while (reader->Read(&message)) {
    for (const v1::Output& out : message.outputs()) {
      texts[out.index()] += out.text();
      if (live) std::cout << out.text() << std::flush;
    }
  }
  const grpc::Status status = reader->Finish();
  if (!live)
    for (const auto& [index, text] : texts)
      std::cout << "--- sample " << index << " ---\n" << text << "\n";
  else if (!texts.empty())
    std::cout << "\n";
  std::cout.flush();
  if (reply) *reply = texts[0];
  return status;
}

}  // namespace

void add_client_flags(CLI::App& command, ClientOptions& o) {
  command.add_option("--server", o.server, "Coordinator address")->capture_default_str();
  command.add_option("--timeout", o.timeout_seconds, "Deadline per call in seconds (0 = none)");
  command
      .add_option("--auth-token-file", o.auth_token_file,
                  "File with the coordinator's bearer token (default: $DSMATH_TOKEN)")
      ->check(CLI::ExistingFile);
  command
      .add_option("--tls-ca", o.tls_ca,
                  "PEM CA to verify the coordinator's certificate with (its --tls-cert): TLS")
      ->check(CLI::ExistingFile);
}

GenerateCommand::GenerateCommand(CLI::App& c, bool interactive)
    : command_(c), interactive_(interactive) {
  add_client_flags(c, client_);
  if (!interactive) {
    c.add_option("prompt", prompt_, "The prompt (the question, with --chat)")->required();
    c.add_flag("--chat", chat_, "Wrap the prompt in the DeepSeekMath chat template");
    c.add_option("--format", format_, "text: stream the text; json: the whole GenerateResponse")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    c.add_option("--request-id", request_id_, "The request's id (default: the server picks one)");
  }
  c.add_flag("--cot", cot_, "Append the chain-of-thought instruction");
  c.add_option("--max-new-tokens", max_new_tokens_, "Default: the model's generation_config");
  c.add_option("--temperature", temperature_, "0 = greedy");
  c.add_option("--top-k", top_k_, "0 = off");
  c.add_option("--top-p", top_p_, "Nucleus mass in (0, 1]");
  c.add_option("--min-p", min_p_, "Drop tokens below min_p x the top probability");
  c.add_option("--repetition-penalty", repetition_penalty_, "HF repetition penalty");
  c.add_option("--presence-penalty", presence_penalty_, "OpenAI presence penalty");
  c.add_option("--frequency-penalty", frequency_penalty_, "OpenAI frequency penalty");
  c.add_option("--seed", seed_, "Same seed, same output");
  c.add_option("--n", n_, "Samples");
  c.add_flag("--ignore-eos", ignore_eos_, "Keep generating past EOS");
  c.add_option("--logprobs", logprobs_, "Report logprobs, with this many alternatives");
  c.add_option("--stop", stop_, "Stop string (repeatable)");
  c.add_option("--stop-token-id", stop_token_ids_, "Stop token id (repeatable)");
}

int GenerateCommand::run() const {
  v1::GenerateRequest r;
  auto given = [&](const char* flag) { return command_.count(flag) > 0; };
  r.set_request_id(request_id_);
  r.set_cot(cot_);
  if (given("--max-new-tokens")) r.set_max_new_tokens(max_new_tokens_);
  if (given("--temperature")) r.set_temperature(temperature_);
  if (given("--top-k")) r.set_top_k(top_k_);
  if (given("--top-p")) r.set_top_p(top_p_);
  if (given("--min-p")) r.set_min_p(min_p_);
  if (given("--repetition-penalty")) r.set_repetition_penalty(repetition_penalty_);
  if (given("--presence-penalty")) r.set_presence_penalty(presence_penalty_);
  if (given("--frequency-penalty")) r.set_frequency_penalty(frequency_penalty_);
  if (given("--seed")) r.set_seed(seed_);
  if (given("--n")) r.set_n(n_);
  if (ignore_eos_) r.set_ignore_eos(true);
  if (given("--logprobs")) r.set_logprobs(logprobs_);
  for (const std::string& s : stop_) r.add_stop(s);
  for (int32_t id : stop_token_ids_) r.add_stop_token_ids(id);
  auto stub = generation_stub(client_);

  if (!interactive_) {
    if (chat_) {
      v1::ChatMessage* m = r.add_messages();
      m->set_role("user");
      m->set_content(prompt_);
    } else {
      r.set_prompt(prompt_);
    }
    if (format_ == "text") return report(stream(*stub, client_, r, nullptr));
    grpc::ClientContext context;
    prepare(context, client_);
    v1::GenerateResponse response;
    const grpc::Status status = stub->Generate(&context, r, &response);
    if (status.ok()) std::cout << to_json(response) << std::endl;
    return report(status);
  }

  // chat: one user turn per line; the conversation so far goes with every request.
  const bool tty = isatty(STDIN_FILENO);
  std::string line;
  for (;;) {
    if (tty) std::cerr << "you> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    v1::ChatMessage* user = r.add_messages();
    user->set_role("user");
    user->set_content(line);
    std::string reply;
    const grpc::Status status = stream(*stub, client_, r, &reply);
    if (!status.ok()) return report(status);
    v1::ChatMessage* assistant = r.add_messages();
    assistant->set_role("assistant");
    assistant->set_content(reply);
  }
  return 0;
}

BatchCommands::BatchCommands(CLI::App& batch) {
  batch.require_subcommand(1);
  add_client_flags(batch, client_);
  submit_ = batch.add_subcommand("submit", "Start a job; prints its id");
  submit_->add_option("--input", input_, "JSONL problems, under the coordinator's --data-dir")
      ->required();
  submit_->add_option("--output", output_, "JSONL samples, under --data-dir")->required();
  submit_->add_option("--summary", summary_, "Summary JSON, under --data-dir");
  submit_->add_option("--n", n_, "Samples per problem");
  submit_->add_option("--temperature", temperature_);
  submit_->add_option("--top-p", top_p_);
  submit_->add_option("--top-k", top_k_);
  submit_->add_option("--min-p", min_p_);
  submit_->add_option("--max-new-tokens", max_new_tokens_);
  submit_->add_option("--seed", seed_);
  submit_->add_option("--stop", stop_, "Stop string (repeatable)");
  submit_->add_option("--prompt-field", prompt_field_);
  submit_->add_option("--id-field", id_field_);
  submit_->add_option("--answer-field", answer_field_);
  submit_->add_option("--template", template_, "Few-shot template, under --data-dir");
  submit_->add_flag("--chat", chat_);
  submit_->add_option("--cot", cot_)->expected(0, 1)->default_str("en");
  submit_->add_option("--output-format", output_format_);
  for (auto [name, help] : {std::pair{"status", "A job's progress (JSON)"},
                            std::pair{"wait", "Wait for a job to end; exit 0 when it completed"},
                            std::pair{"cancel", "Cancel a job"}}) {
    CLI::App* c = batch.add_subcommand(name, help);
    c->add_option("job", job_id_, "The job id")->required();
    (std::string(name) == "status" ? status_ : std::string(name) == "wait" ? wait_ : cancel_) = c;
  }
  list_ = batch.add_subcommand("list", "Every job this coordinator knows (JSON lines)");
  // --server and --timeout may come after the subcommand too.
  for (CLI::App* c : {submit_, status_, wait_, cancel_, list_}) c->fallthrough();
}

int BatchCommands::run() const {
  auto stub = v1::BatchJobs::NewStub(grpc::CreateChannel(client_.server, credentials(client_)));
  v1::BatchJobStatus status;
  auto call = [&](auto method, const auto& request, auto* response) {
    grpc::ClientContext context;
    prepare(context, client_);
    return ((*stub).*method)(&context, request, response);
  };
  if (submit_->parsed()) {
    v1::SubmitBatchRequest r;
    r.set_input(input_);
    r.set_output(output_);
    r.set_summary(summary_);
    r.set_n(n_);
    auto given = [&](const char* flag) { return submit_->count(flag) > 0; };
    if (given("--temperature")) r.set_temperature(temperature_);
    if (given("--top-p")) r.set_top_p(top_p_);
    if (given("--top-k")) r.set_top_k(top_k_);
    if (given("--min-p")) r.set_min_p(min_p_);
    if (given("--max-new-tokens")) r.set_max_new_tokens(max_new_tokens_);
    if (given("--seed")) r.set_seed(seed_);
    for (const std::string& s : stop_) r.add_stop(s);
    r.set_prompt_field(prompt_field_);
    r.set_id_field(id_field_);
    r.set_answer_field(answer_field_);
    r.set_template_(template_);
    r.set_chat(chat_);
    r.set_cot(given("--cot") && cot_.empty() ? "en" : cot_);
    r.set_output_format(output_format_);
    const grpc::Status s = call(&v1::BatchJobs::Stub::Submit, r, &status);
    if (s.ok()) std::cout << status.job_id() << std::endl;
    return report(s);
  }
  if (list_->parsed()) {
    v1::ListBatchJobsResponse jobs;
    const grpc::Status s = call(&v1::BatchJobs::Stub::List, v1::ListBatchJobsRequest(), &jobs);
    for (const v1::BatchJobStatus& j : jobs.jobs()) std::cout << to_json(j) << "\n";
    return report(s);
  }
  v1::BatchJobRequest r;
  r.set_job_id(job_id_);
  if (cancel_->parsed()) {
    const grpc::Status s = call(&v1::BatchJobs::Stub::Cancel, r, &status);
    if (s.ok()) std::cout << to_json(status) << std::endl;
    return report(s);
  }
  for (bool said = false;;) {
    const grpc::Status s = call(&v1::BatchJobs::Stub::Get, r, &status);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE && wait_->parsed()) {
      // The coordinator restarts: its jobs resume when it is back.
      if (!said) std::cerr << "dsmath: waiting for the coordinator (" << s.error_message() << ")\n";
      said = true;
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (!s.ok()) return report(s);
    if (status_->parsed() || (status.state() != "running" && status.state() != "paused")) break;
    if (status.state() == "paused")
      std::cerr << status.job_id() << ": paused: " << status.error() << "\n";
    std::cerr << status.job_id() << ": " << status.samples_done() << "/" << status.samples_total()
              << " samples, " << status.problems_done() << "/" << status.problems_total()
              << " problems, " << int64_t(status.tokens_per_second()) << " tok/s, ETA "
              << int64_t(status.eta_seconds()) << " s" << std::endl;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::cout << to_json(status) << std::endl;
  return wait_->parsed() && status.state() != "completed" ? 1 : 0;
}

int run_info(const ClientOptions& o) {
  grpc::ClientContext context;
  prepare(context, o);
  v1::ModelInfo info;
  const grpc::Status status = generation_stub(o)->GetModelInfo(&context, {}, &info);
  if (status.ok()) std::cout << to_json(info) << std::endl;
  return report(status);
}

int run_health(const ClientOptions& o, const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateChannel(o.server, credentials(o)));
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(int64_t((o.timeout_seconds > 0 ? o.timeout_seconds : 5) * 1000)));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return report(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
            << std::endl;
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace dsmath
