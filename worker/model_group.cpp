#include "worker/model_group.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <map>
#include <vector>

#include "common/core/error.h"
#include "common/text/prompt.h"
#include "kernels/cpu/gemm.h"
#include "worker/comm/checked_call.h"
#include "worker/comm/collective_error.h"
#include "worker/comm/collective_watchdog.h"
#include "worker/comm/mpi_session.h"
#include "worker/model/paged_kv_cache.h"

namespace dsmath {

namespace {
template <typename Value>
std::vector<std::string> names_of(const std::map<std::string, Value>& values) {
  std::vector<std::string> names;
  for (const auto& [name, value] : values) names.push_back(name);
  return names;
}
}  // namespace

void add_group_flags(CLI::App& command, GroupOptions& o) {
  command.add_option("--model", o.model_dir, "Checkpoint directory (Hugging Face layout)")
      ->required()
      ->check(CLI::ExistingDirectory);
  command
      .add_option_function<std::string>(
          "--device", [&o](const std::string& name) { o.device = devices().at(name); },
          "Where each rank computes: cpu, or cuda (one GPU per rank, by its rank on the node)")
      ->check(CLI::IsMember(names_of(devices())))
      ->default_str("cpu");
  command
      .add_option(
          "--pp", o.pp,
          "Pipeline stages: consecutive layers per stage, tp = (mpirun -np) / pp ranks each")
      ->capture_default_str();
  command
      .add_option("--pp-layers", o.pp_layers,
                  "Layers per stage, comma-separated (default: as even as possible)")
      ->delimiter(',');
  command
      .add_option("--micro-batches", o.micro_batches,
                  "Steps in flight at once, each over its own sequences (default: --pp, so that "
                  "every stage works at once; 1: one step at a time)")
      ->check(CLI::Range(1, 64));
  command
      .add_option("--overlap", o.overlap,
                  "Launch each step before the last one's tokens are back, so that the host "
                  "plans while the device computes: on, off, or auto (on for --device cuda at "
                  "--pp 1). Samples are the same either way")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  command.add_option("--threads", o.threads,
                     "CPU threads per rank (default: the node's cores / its ranks)");
  command.add_option("--kv-cache-gib", o.kv_cache_gib, "KV cache memory per rank, GiB")
      ->capture_default_str();
  command
      .add_option_function<std::string>(
          "--kv-dtype", [&o](const std::string& name) { o.kv_dtype = kv_dtypes().at(name); },
          "KV cache element type: f32 (exact) or bf16 (twice the tokens per GiB)")
      ->check(CLI::IsMember(names_of(kv_dtypes())))
      ->default_str("f32");
  command
      .add_option_function<std::string>(
          "--matmul-precision",
          [&o](const std::string& name) { o.matmul_precision = cpu::matmul_precisions().at(name); },
          "highest: f32-grade activations in the bf16 matrix products; medium: bf16 "
          "activations (as torch and llama.cpp), about 2x prefill and batched decode "
          "where the CPU has AVX512-BF16")
      ->check(CLI::IsMember(names_of(cpu::matmul_precisions())))
      ->default_str("highest");
  command
      .add_option("--max-step-tokens", o.max_step_tokens,
                  "Tokens per forward step: decodes first, then prompt chunks")
      ->capture_default_str();
  command.add_flag("--no-prefix-cache{false}", o.prefix_cache,
                   "Do not reuse KV blocks of earlier prompts with the same prefix");
  command
      .add_option("--collective-timeout-seconds", o.collective_timeout_seconds,
                  "Abort the group when one collective (an all-reduce, a stage's activations) "
                  "waits longer than this for the other ranks: a rank is stuck. It must exceed "
                  "the longest step. 0: wait forever")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
}

ModelGroup::ModelGroup(const GroupOptions& o, Communicator& comm,
                       const std::function<void(const Tokenizer&)>& driver_setup)
    : options_(o) {
  MpiSession::set_threads_per_rank(o.threads);
  cpu::set_matmul_precision(o.matmul_precision);
  collectively(comm, [&] {
    topology_ = Topology::pipeline(comm.topology().world_size, comm.topology().rank, o.pp);
    backend_ = make_backend(o.device, o.kv_dtype, comm.control_comm());
  });
  // The stage's tensor-parallel ranks get a communicator of their own (the whole group at pp 1).
  if (topology_.pp_size > 1) {
    MPI_Comm stage = MPI_COMM_NULL;
    DSMATH_MPI_CHECK(MPI_Comm_split(comm.control_comm(), topology_.stage, topology_.rank, &stage));
    stage_comm_ = make_mpi_communicator(stage);
    DSMATH_MPI_CHECK(MPI_Comm_free(&stage));
  }
  Communicator& tp_comm = stage_comm_ ? *stage_comm_ : comm;
  // Its own error agreement: NCCL's bootstrap is collective over the same ranks.
  model_comm_ = make_model_communicator(*backend_, tp_comm);
  stage_links_ = make_stage_links(*backend_, comm, topology_.pp_size);

  PipelineStage stage;
  int32_t blocks = 0;
  collectively(comm, [&] {
    DSMATH_CHECK(std::isfinite(o.kv_cache_gib) && o.kv_cache_gib > 0 && o.kv_cache_gib <= 1 << 20,
                 "--kv-cache-gib must be a positive number of GiB (at most 1048576), got ",
                 o.kv_cache_gib);
    DSMATH_CHECK(o.max_step_tokens >= 1, "--max-step-tokens must be at least 1, got ",
                 o.max_step_tokens);
    checkpoint_.emplace(Checkpoint::open(o.model_dir));
    const ModelConfig& c = checkpoint_->config();
    stage = PipelineStage::make(c, topology_, o.pp_layers, &comm);
    stage.activations = stage_links_.get();
    const TpLayout layout = TpLayout::make(c, topology_.tp_size, topology_.tp_rank);
    // A stage holds the KV of its own layers: --kv-cache-gib buys more blocks on shorter stages.
    blocks = PagedKVCache::blocks_for_bytes(
        LlamaModel::stage_config(c, stage), layout.local_kv_heads,
        int64_t(o.kv_cache_gib * double(1ull << 30)), 16, o.kv_dtype);
  });
  // One block table serves every stage, so every stage gets as many blocks as the fewest.
  if (comm.control_comm() != MPI_COMM_NULL)
    DSMATH_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, &blocks, 1, MPI_INT32_T, MPI_MIN, comm.control_comm()));
  collectively(comm, [&] {
    model_.emplace(*checkpoint_, *backend_, model_comm_ ? *model_comm_ : tp_comm, blocks, 16,
                   stage);
    if (!comm.topology().is_driver()) return;
    tokenizer_.emplace(Tokenizer::load(o.model_dir));
    if (driver_setup) driver_setup(*tokenizer_);
  });
  runner_.emplace(*model_, comm);
  // Loaded: from here on every collective is part of a step, and none should wait for long.
  CollectiveWatchdog::start(comm.topology().rank,
                            std::chrono::seconds(options_.collective_timeout_seconds));
}

EngineConfig ModelGroup::engine_config() const {
  EngineConfig config;
  config.max_step_tokens = options_.max_step_tokens;
  config.prefix_caching = options_.prefix_cache;
  config.micro_batches = options_.micro_batches > 0 ? options_.micro_batches : topology_.pp_size;
  // Pipeline stages overlap through micro-batches instead; on the CPU the host is the device.
  config.overlap =
      options_.overlap == "on" || (options_.overlap == "auto" && options_.device == Device::kCuda &&
                                   topology_.pp_size == 1 && config.micro_batches == 1);
  DSMATH_CHECK(!config.overlap || (topology_.pp_size == 1 && config.micro_batches == 1),
               "--overlap on needs --pp 1 and --micro-batches 1 (got --pp ", topology_.pp_size,
               ", --micro-batches ", config.micro_batches,
               "): pipeline stages overlap through micro-batches; use --overlap off or auto");
  config.eos_token_ids =
      eos_token_ids(checkpoint_->config(), checkpoint_->generation_config(), *tokenizer_);
  return config;
}

}  // namespace dsmath
