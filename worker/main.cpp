// dsmath-worker: runs one model replica, tensor-parallel over the ranks of its mpirun job.
//   [mpirun -np N] dsmath-worker generate --model DIR --prompt TEXT [flags] [--format text|json]
//   [mpirun -np N] dsmath-worker generate --model DIR --prompts-file FILE.jsonl
//   [mpirun -np N] dsmath-worker serve --model DIR --coordinator HOST:PORT
//   [mpirun -np N] dsmath-worker batch --model DIR --input IN.jsonl --output OUT.jsonl [--n K]
// Rank 0 runs the engine (tokenizes, schedules each step, samples, prints); the other ranks
// follow its step plans.
#include <CLI/CLI.hpp>

#include "worker/batch_command.h"
#include "worker/comm/mpi_session.h"
#include "worker/generate_command.h"
#include "worker/serve/serve_command.h"

int main(int argc, char** argv) {
  using namespace dsmath;
  MpiSession mpi(&argc, &argv);
  CLI::App app{"dsmath-worker: runs DeepSeekMath / LLaMA checkpoints"};
  app.require_subcommand(1);

  GenerateOptions g;
  SamplingParams& s = g.defaults.params;
  CLI::App* gen = app.add_subcommand("generate", "Generate a completion for one or more prompts");
  add_group_flags(*gen, g.group);
  gen->add_option("--prompt", g.prompt, "Prompt text");
  gen->add_option(
      "--prompts-file", g.prompts_file,
      "JSONL file: one prompt per line, a JSON string or {\"prompt\": ..., \"id\": ...} with "
      "per-line max_new_tokens, temperature, top_p, top_k, min_p, seed, n, stop");
  gen->add_flag("--chat", g.chat, "Wrap the prompt in the DeepSeekMath chat format");
  gen->add_option("--cot", g.cot, "Append the chain-of-thought instruction (en or zh)")
      ->expected(0, 1)
      ->default_str("en")
      ->check(CLI::IsMember({"en", "zh"}));
  gen->add_option("--max-new-tokens", s.max_new_tokens, "Most tokens to generate")
      ->capture_default_str();
  gen->add_option("--temperature", s.temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", s.top_k, "Keep the k most likely tokens (0 = off)");
  gen->add_option("--top-p", s.top_p, "Nucleus sampling mass (1 = off)");
  gen->add_option("--min-p", s.min_p, "Drop tokens below min_p x the top probability");
  gen->add_option("--repetition-penalty", s.repetition_penalty, "HF repetition penalty (1 = off)");
  gen->add_option("--presence-penalty", s.presence_penalty, "OpenAI presence penalty");
  gen->add_option("--frequency-penalty", s.frequency_penalty, "OpenAI frequency penalty");
  gen->add_option("--seed", s.seed, "Random seed");
  gen->add_option("--stop", g.defaults.stop, "Stop string (repeatable); the text ends before it");
  gen->add_option("--stop-token-id", s.stop_token_ids, "Extra stop token id (repeatable)");
  gen->add_flag("--ignore-eos", s.ignore_eos, "Keep generating past EOS");
  gen->add_flag("--logprobs", s.logprobs, "Report each generated token's log-probability");
  gen->add_option("--top-logprobs", s.top_logprobs,
                  "Also report the N most likely tokens per step");
  gen->add_option("--format", g.format, "Output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  gen->add_option("--n", g.defaults.n, "Samples per prompt (they share the prompt's prefill)")
      ->capture_default_str();

  ServeOptions v;
  CLI::App* serve = app.add_subcommand(
      "serve", "Join a dsmath-coordinator and run the requests it routes to this group");
  add_group_flags(*serve, v.group);
  serve->add_option("--coordinator", v.coordinator, "The coordinator's --worker-listen address")
      ->required();
  serve->add_option("--tls-ca", v.tls.ca, "PEM CA to verify the coordinator with: TLS")
      ->check(CLI::ExistingFile);
  serve
      ->add_option("--tls-cert", v.tls.cert,
                   "PEM certificate this group presents (the coordinator's --tls-ca signed it)")
      ->check(CLI::ExistingFile);
  serve->add_option("--tls-key", v.tls.key, "PEM private key of --tls-cert")
      ->check(CLI::ExistingFile);
  serve
      ->add_option("--worker-secret-file", v.secret_file,
                   "File holding the secret the coordinator's --worker-secret-file asks for")
      ->check(CLI::ExistingFile);
  serve
      ->add_option("--max-reconnect-seconds", v.max_backoff_seconds,
                   "Longest wait between attempts to reach the coordinator")
      ->capture_default_str();

  BatchOptions b;
  CLI::App* batch = app.add_subcommand(
      "batch", "Sample n solutions per problem of a JSONL file, graded, resumable, exactly once");
  add_group_flags(*batch, b.group);
  batch->add_option("--input", b.job.input, "JSONL problems (native or OpenAI batch format)")
      ->required()
      ->check(CLI::ExistingFile);
  batch
      ->add_option("--output", b.job.output,
                   "JSONL samples, appended as they finish; an existing one is resumed")
      ->required();
  batch->add_option("--summary", b.job.summary, "Write the summary JSON (maj@k, pass@k, ...) here");
  batch->add_option("--n", b.job.n, "Samples per problem")->capture_default_str();
  batch->add_option("--temperature", b.job.sampling.temperature, "0 = greedy")
      ->capture_default_str();
  batch->add_option("--top-p", b.job.sampling.top_p, "Nucleus mass")->capture_default_str();
  batch->add_option("--top-k", b.job.sampling.top_k, "0 = off")->capture_default_str();
  batch->add_option("--min-p", b.job.sampling.min_p, "0 = off");
  batch->add_option("--max-new-tokens", b.job.sampling.max_new_tokens, "Per sample")
      ->capture_default_str();
  batch
      ->add_option("--seed", b.job.sampling.seed,
                   "With the id and sample index: each sample's RNG key")
      ->capture_default_str();
  batch->add_option("--stop", b.job.stop, "Stop string (repeatable)");
  batch->add_option("--prompt-field", b.job.fields.prompt_field,
                    "Default: question, problem or prompt (or messages)");
  batch->add_option("--id-field", b.job.fields.id_field, "Default: id, else the line number");
  batch->add_option("--answer-field", b.job.fields.answer_field,
                    "Reference answer; default: answer (GSM8K ####) or solution (MATH \\boxed)");
  batch->add_option("--template", b.job.template_file,
                    "Few-shot template with {question} (.json: with its stop strings)");
  batch->add_flag("--chat", b.job.chat, "DeepSeekMath chat format (instruct / RL models)");
  batch->add_option("--cot", b.job.cot, "Append the chain-of-thought instruction (en or zh)")
      ->expected(0, 1)
      ->default_str("en")
      ->check(CLI::IsMember({"en", "zh"}));
  batch
      ->add_option("--output-format", b.job.output_format, "native, or openai (batch output lines)")
      ->check(CLI::IsMember({"native", "openai"}))
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // A bare --cot means English.
  if (gen->count("--cot") && g.cot.empty()) g.cot = "en";
  if (batch->count("--cot") && b.job.cot.empty()) b.job.cot = "en";
  // Errors every rank agreed on (bad flags, bad tp, a missing shard) print one line and exit 1
  // on every rank; an error on one rank alone ends the whole job rather than hanging it.
  return mpi.run("dsmath-worker", [&] {
    std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
    if (serve->parsed()) return run_serve(v, *comm);
    if (batch->parsed()) return run_batch(b, *comm);
    return run_generate(g, *comm);
  });
}
