// dsmath-worker: runs one model replica, tensor-parallel over the ranks of its mpirun job.
//   [mpirun -np N] dsmath-worker generate --model DIR --prompt TEXT [flags] [--format text|json]
//   [mpirun -np N] dsmath-worker generate --model DIR --prompts-file FILE.jsonl  (one batched run)
// Rank 0 tokenizes, plans each step, samples and prints; the other ranks follow its plans.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/checkpoint/checkpoint.h"
#include "common/core/error.h"
#include "common/tokenizer/tokenizer.h"
#include "worker/comm/collective_error.h"
#include "worker/comm/communicator.h"
#include "worker/comm/mpi_session.h"
#include "worker/engine/generator.h"
#include "worker/model/cpu_backend.h"
#include "worker/prompt.h"

namespace dsmath {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  std::string prompts_file;
  bool chat = false;
  std::string cot;  // "", "en", "zh"
  SamplingParams sampling;
  bool logprobs = false;
  std::string format = "text";
  int threads = 0;
  double kv_cache_gib = 4.0;
  int64_t n = 1;  // samples per prompt
};

// --prompts-file: one JSON value per line, a string or an object with "prompt".
std::vector<std::string> read_prompts_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--prompts-file: cannot open ", path);
  std::vector<std::string> prompts;
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(path, ":", lineno, ": invalid JSON: ", e.what());
    }
    if (j.is_string()) {
      prompts.push_back(j.get<std::string>());
    } else if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
      prompts.push_back(j["prompt"].get<std::string>());
    } else {
      fail(path, ":", lineno, ": expected a JSON string or an object with a string \"prompt\"");
    }
  }
  DSMATH_CHECK(!prompts.empty(), "--prompts-file: ", path, " holds no prompts");
  return prompts;
}

nlohmann::json to_json(const GenerationResult& r, bool with_logprobs) {
  nlohmann::json j = {{"text", r.text},
                      {"token_ids", r.token_ids},
                      {"finish_reason", r.finish_reason},
                      {"prompt_tokens", r.prompt_tokens},
                      {"completion_tokens", r.completion_tokens}};
  if (with_logprobs) j["logprobs"] = r.logprobs;
  if (!r.top_logprobs.empty()) {
    nlohmann::json tops = nlohmann::json::array();
    for (const auto& step : r.top_logprobs) {
      nlohmann::json alts = nlohmann::json::array();
      for (const TokenLogprob& t : step)
        alts.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
      tops.push_back(alts);
    }
    j["top_logprobs"] = tops;
  }
  return j;
}

int run_generate(const GenerateOptions& o, Communicator& comm) {
  // Ranks on one node share its cores (default: cores / ranks on this node).
  const int per_rank = std::max(1, omp_get_num_procs() / MpiSession::ranks_on_this_node());
  omp_set_num_threads(o.threads > 0 ? o.threads : per_rank);
  const bool driver = comm.topology().is_driver();

  // Every rank loads its own shard; a failure on any rank (bad tp, a shard missing on one
  // machine) stops all of them with that rank's message instead of leaving the others hanging.
  std::optional<Checkpoint> checkpoint;
  std::optional<Tokenizer> tokenizer;
  std::optional<LlamaModel> model;
  std::vector<GenerationRequest> requests;
  CpuBackend backend;
  collectively(comm, [&] {
    DSMATH_CHECK(o.prompt.empty() != o.prompts_file.empty(),
                 "generate: give exactly one of --prompt and --prompts-file");
    DSMATH_CHECK(std::isfinite(o.kv_cache_gib) && o.kv_cache_gib > 0 && o.kv_cache_gib <= 1 << 20,
                 "--kv-cache-gib must be a positive number of GiB (at most 1048576), got ",
                 o.kv_cache_gib);
    checkpoint.emplace(Checkpoint::open(o.model_dir));
    const ModelConfig& c = checkpoint->config();
    const TpLayout layout = TpLayout::make(c, comm.topology().tp_size, comm.topology().tp_rank);
    const int32_t blocks = PagedKVCache::blocks_for_bytes(
        c, layout.local_kv_heads, int64_t(o.kv_cache_gib * double(1ull << 30)));
    model.emplace(*checkpoint, backend, comm, blocks);
    if (!driver) return;
    tokenizer.emplace(Tokenizer::load(o.model_dir));
    PromptFormat format;
    format.chat = o.chat;
    format.cot = o.cot.empty()   ? CotLanguage::kNone
                 : o.cot == "zh" ? CotLanguage::kChinese
                                 : CotLanguage::kEnglish;
    const std::vector<std::string> prompts = o.prompts_file.empty()
                                                 ? std::vector<std::string>{o.prompt}
                                                 : read_prompts_file(o.prompts_file);
    DSMATH_CHECK(o.n >= 1, "--n must be at least 1, got ", o.n);
    // Every sample has its own RNG stream (prompt i, sample k -> stream i * n + k), so repeated
    // questions and the n samples of one question all differ; samples of one prompt share its
    // prefill.
    for (const std::string& p : prompts) {
      const std::vector<int32_t> ids = build_prompt(*tokenizer, p, format);
      for (int64_t k = 0; k < o.n; ++k) requests.push_back({ids, o.sampling, requests.size()});
    }
    // Checked here, inside collectively(), so a bad request stops every rank cleanly.
    for (size_t i = 0; i < requests.size(); ++i) check_request(*model, requests[i], i);
  });

  ModelRunner runner(*model, comm);
  if (!driver) {
    runner.follow();
    return 0;
  }
  std::vector<GenerationResult> results;
  {
    Generator generator(runner, *tokenizer, eos_token_ids(*checkpoint, *tokenizer));
    results = generator.generate(requests);
  }
  runner.shutdown();
  for (size_t i = 0; i < results.size(); ++i) {
    const GenerationResult& r = results[i];
    if (o.format == "json") {
      nlohmann::json j = to_json(r, o.logprobs);
      if (o.n > 1) {
        j["prompt_index"] = int64_t(i) / o.n;
        j["sample_index"] = int64_t(i) % o.n;
      }
      std::cout << j.dump() << "\n";
    } else {
      std::cout << r.text << "\n";
    }
  }
  return 0;
}

}  // namespace
}  // namespace dsmath

int main(int argc, char** argv) {
  using namespace dsmath;
  MpiSession mpi(&argc, &argv);
  CLI::App app{"dsmath-worker: runs DeepSeekMath / LLaMA checkpoints"};
  app.require_subcommand(1);

  GenerateOptions g;
  SamplingParams& s = g.sampling;
  CLI::App* gen = app.add_subcommand("generate", "Generate a completion for one or more prompts");
  gen->add_option("--model", g.model_dir, "Checkpoint directory (Hugging Face layout)")
      ->required()
      ->check(CLI::ExistingDirectory);
  gen->add_option("--prompt", g.prompt, "Prompt text");
  gen->add_option(
      "--prompts-file", g.prompts_file,
      "JSONL file: one prompt per line (JSON string or {\"prompt\": ...}); one batched run");
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
  gen->add_option("--stop", s.stop, "Stop string (repeatable); not included in the output");
  gen->add_option("--stop-token-id", s.stop_token_ids, "Extra stop token id (repeatable)");
  gen->add_flag("--ignore-eos", s.ignore_eos, "Keep generating past EOS");
  gen->add_flag("--logprobs", g.logprobs, "Report each generated token's log-probability");
  gen->add_option("--top-logprobs", s.top_logprobs,
                  "Also report the N most likely tokens per step");
  gen->add_option("--format", g.format, "Output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  gen->add_option("--threads", g.threads,
                  "CPU threads per rank (default: the node's cores / its ranks)");
  gen->add_option("--n", g.n, "Samples per prompt (they share the prompt's prefill)")
      ->capture_default_str();
  gen->add_option("--kv-cache-gib", g.kv_cache_gib, "KV cache memory per rank, GiB")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // A bare --cot means English.
  if (gen->count("--cot") && g.cot.empty()) g.cot = "en";
  // Errors every rank agreed on (bad flags, bad tp, a missing shard) print one line and exit 1
  // on every rank; an error on one rank alone ends the whole job rather than hanging it.
  return mpi.run("dsmath-worker", [&] {
    std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
    return run_generate(g, *comm);
  });
}
