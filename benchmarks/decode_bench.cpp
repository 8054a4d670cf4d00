// dsmath-bench-decode: speed and memory of one model replica on this machine, at the tp x pp
// of its mpirun job (every rank runs the same steps, as followers of a driver would).
//   [mpirun -np N] dsmath-bench-decode --model DIR [--batch 1] [--prompt-tokens 32]
//                                      [--new-tokens 32] [--threads T] [--kv-dtype f32|bf16]
//                                      [--matmul-precision highest|medium] [--pp P]
//                                      [--micro-batches M] [--device cpu|cuda]
//                                      [--shared-prompt] [--read-bound N] [--format text|json]
// --pp P splits the layers over P stages (tp = N / P); decode then runs the batch as M
// micro-batches (default P) with up to M steps in flight, as the engine does, so that every
// stage works at once; --micro-batches 1 runs one step at a time for comparison.
// --shared-prompt makes the batch n samples of one prompt, as a batch job's --n does: the prompt
// is prefilled once and its blocks shared by every sequence (forked), which then decode apart.
// --read-bound N (one rank, CPU): after the timed decode, N more decode steps, each followed by a
// plain multi-threaded read of the weights a step reads, as the kernels read them (the packed
// copies where the CPU keeps them; stream_read.h): the decode's rate as a fraction of reading the
// same bytes, measured in turns in one process. This machine's memory ran at ~45 and at ~75 GB/s in
// turns seconds apart, so a bound probed at another moment (dsmath-cpu-probe) can be off by either.
// Prints prefill and decode tokens/s, and each rank's peak RSS against the weight bytes of a
// whole checkpoint; the achieved TFLOP/s of the prefill (the matmul and attention products)
// and GB/s of a decode step (the bf16 weights every step reads once, per rank), to set
// against the device's peak and bandwidth. Next tokens are a fixed function of the step (not
// chosen), so every run does the same work whatever the random weights say; each step still
// picks a greedy token per sequence where the logits are, as the engine would.
#include <mpi.h>
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <span>
#include <vector>

#include "stream_read.h"

#include "common/checkpoint/checkpoint.h"
#include "common/core/error.h"
#include "kernels/cpu/gemm.h"
#include "worker/comm/checked_call.h"
#include "worker/comm/collective_error.h"
#include "worker/comm/mpi_session.h"
#include "worker/engine/block_manager.h"
#include "worker/engine/model_runner.h"
#include "worker/engine/row_sample.h"
#include "worker/model/llama.h"
#include "worker/model/make_backend.h"
#include "worker/model/paged_kv_cache.h"
#include "worker/model/pipeline_stage.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Reads `spans` once with every OpenMP thread, each span cut into one piece per thread;
// returns the bytes read (whole stream_sum steps).
size_t read_once(const std::vector<std::span<const std::byte>>& spans) {
  size_t bytes = 0;
  uint32_t sink = 0;
#pragma omp parallel reduction(+ : bytes, sink)
  {
    const size_t t = size_t(omp_get_thread_num()), n = size_t(omp_get_num_threads());
    for (const auto& s : spans) {
      const size_t begin = s.size() * t / n, end = s.size() * (t + 1) / n;
      sink += dsmath::bench::stream_sum(s.data() + begin, end - begin);
      bytes += (end - begin) / dsmath::bench::kStreamStep * dsmath::bench::kStreamStep;
    }
  }
  volatile uint32_t keep = sink;
  (void)keep;
  return bytes;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dsmath;
  MpiSession mpi(&argc, &argv);
  std::string model_dir, format = "text";
  int64_t batch = 1, prompt_tokens = 32, new_tokens = 32;
  int threads = 0;
  CLI::App app{"dsmath-bench-decode: prefill/decode throughput and peak RSS per rank"};
  app.add_option("--model", model_dir, "Checkpoint directory")->required();
  app.add_option("--batch", batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "Prompt length per sequence")
      ->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Decode steps")->capture_default_str();
  app.add_option("--threads", threads,
                 "CPU threads per rank (default: the node's cores / its ranks)");
  std::string kv_dtype = "f32", precision = "highest", device = "cpu";  // names, for the JSON
  app.add_option("--kv-dtype", kv_dtype, "KV cache element type")
      ->check(CLI::IsMember(kv_dtypes()))
      ->capture_default_str();
  app.add_option("--matmul-precision", precision, "highest (f32-grade) or medium (bf16)")
      ->check(CLI::IsMember(cpu::matmul_precisions()))
      ->capture_default_str();
  app.add_option("--device", device, "cpu or cuda (one GPU per rank)")
      ->check(CLI::IsMember(devices()))
      ->capture_default_str();
  int pp = 1, micro_batches = 0;
  app.add_option("--pp", pp, "Pipeline stages (tp = ranks / pp)")->capture_default_str();
  app.add_option("--micro-batches", micro_batches, "Decode micro-batches in flight (default: --pp)")
      ->check(CLI::Range(1, 64));
  int64_t read_bound = 0;
  app.add_option("--read-bound", read_bound,
                 "N decode steps alternated with plain reads of the same weights (one rank, CPU)")
      ->check(CLI::Range(int64_t(0), int64_t(1000)));
  bool shared_prompt = false;
  app.add_flag("--shared-prompt", shared_prompt,
               "The batch is samples of one prompt: prefilled once, its blocks shared");
  app.add_option("--format", format, "text or json")->check(CLI::IsMember({"text", "json"}));
  CLI11_PARSE(app, argc, argv);
  try {
    MpiSession::set_threads_per_rank(threads);
    cpu::set_matmul_precision(cpu::matmul_precisions().at(precision));
    std::unique_ptr<Communicator> comm = make_mpi_communicator(MPI_COMM_WORLD);
    Topology topo;
    std::unique_ptr<Backend> backend;
    collectively(*comm, [&] {
      topo = Topology::pipeline(comm->topology().world_size, comm->topology().rank, pp);
      DSMATH_CHECK(batch >= (micro_batches > 0 ? micro_batches : pp),
                   "--batch must be at least the micro-batch count");
      backend = make_backend(devices().at(device), kv_dtypes().at(kv_dtype), MPI_COMM_WORLD);
    });
    if (micro_batches == 0) micro_batches = pp;
    DSMATH_CHECK(read_bound == 0 || (topo.world_size == 1 && device == "cpu"),
                 "--read-bound times one rank on the CPU: run it without mpirun -np > 1 and ",
                 "with --device cpu");
    // The stage's tp ranks get a communicator of their own, as in a worker group.
    std::unique_ptr<Communicator> stage_comm;
    if (pp > 1) {
      MPI_Comm stage = MPI_COMM_NULL;
      DSMATH_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, topo.stage, topo.rank, &stage));
      stage_comm = make_mpi_communicator(stage);
      DSMATH_MPI_CHECK(MPI_Comm_free(&stage));
    }
    Communicator& tp_comm = stage_comm ? *stage_comm : *comm;
    std::unique_ptr<Communicator> model_comm = make_model_communicator(*backend, tp_comm);
    std::unique_ptr<Communicator> stage_links = make_stage_links(*backend, *comm, pp);
    std::optional<Checkpoint> ckpt;
    std::optional<LlamaModel> model;
    const int32_t block_size = 16;
    const int64_t steps = new_tokens + read_bound;  // decoded tokens, the timed ones first
    const int32_t blocks_per_seq = int32_t((prompt_tokens + steps + block_size - 1) / block_size);
    // Shared: the prompt's blocks once, then each sequence's own (a copy of the prompt's partial
    // last block, and its new tokens). The extra block is the warm-up token's.
    const int32_t kv_blocks = shared_prompt
                                  ? int32_t((prompt_tokens + block_size - 1) / block_size +
                                            batch * ((steps + block_size - 1) / block_size + 1) + 1)
                                  : int32_t(batch) * blocks_per_seq + 1;
    const auto t_load = std::chrono::steady_clock::now();
    collectively(*comm, [&] {
      ckpt.emplace(Checkpoint::open(model_dir));
      PipelineStage stage =
          PipelineStage::make(ckpt->config(), topo, {}, pp > 1 ? comm.get() : nullptr);
      stage.activations = stage_links.get();
      model.emplace(*ckpt, *backend, model_comm ? *model_comm : tp_comm, kv_blocks, block_size,
                    stage);
    });
    const double load_s = seconds_since(t_load);
    const ModelConfig& c = model->config();

    // The driver plans and times the steps; the other ranks follow its plans (ModelRunner), as
    // in a worker group. Each step samples greedily where the logits are (the last stage under
    // --pp), and the next tokens stay a fixed function of the step.
    ModelRunner runner(*model, *comm);
    double prefill_s = 0, decode_s = 0;
    std::vector<double> read_s, step_s;  // --read-bound's turns
    size_t read_bytes = 0;
    if (!topo.is_driver()) {
      runner.follow();
    } else {
      BlockManager blocks(model->kv_blocks(), block_size);
      std::vector<BlockTable> tables(static_cast<size_t>(batch));
      // Step `step` of sequences [first, end): the prompt at step 0, one token after.
      auto plan_of = [&](int64_t step, int64_t first, int64_t end) {
        StepPlan plan;
        std::vector<RowSample> greedy;
        for (int64_t b = first; b < end; ++b) {
          if (step == 0 && shared_prompt && b > 0) break;  // forked after the prefill
          BlockTable& t = tables[size_t(b)];
          StepSequence s;
          s.first_position = t.num_tokens;
          const int64_t n = step == 0 ? prompt_tokens : 1;
          for (int64_t i = 0; i < n; ++i)
            s.tokens.push_back(
                int32_t((1000 + 37 * (s.first_position + i) + 11 * b) % c.vocab_size));
          for (const BlockCopy& copy : blocks.append(t, int32_t(n)))  // a shared partial block
            plan.copies.push_back({copy.src, copy.dst});
          s.block_table = t.blocks;
          plan.sequences.push_back(std::move(s));
          RowSample g;
          g.row = int32_t(b - first);
          g.params.temperature = 0;
          greedy.push_back(g);
        }
        plan.sampling = encode_row_samples(greedy);
        return plan;
      };
      // Micro-batch g holds sequences [bounds[g], bounds[g + 1]).
      std::vector<int64_t> bounds;
      for (int64_t g = 0; g <= micro_batches; ++g) bounds.push_back(batch * g / micro_batches);

      // One untimed token first, in a block of its own: the mapped weights fault in here, not
      // in the timed prefill (peers are timed after a warm-up too).
      {
        BlockTable warm;
        blocks.append(warm, 1);
        StepPlan plan;
        plan.sequences.push_back({{1}, 0, warm.blocks});
        runner.step(plan);
      }
      const auto t_prefill = std::chrono::steady_clock::now();
      runner.step(plan_of(0, 0, batch));
      prefill_s = seconds_since(t_prefill);
      if (shared_prompt)
        for (int64_t b = 1; b < batch; ++b) tables[size_t(b)] = blocks.fork(tables[0]);
      // Decode: micro-batch g's step i goes in once its step i - 1 is back (the oldest in
      // flight), as the engine schedules them; at most micro_batches steps in flight.
      const auto t_decode = std::chrono::steady_clock::now();
      int64_t in_flight = 0;
      for (int64_t i = 1; i < new_tokens; ++i) {
        for (int64_t g = 0; g < micro_batches; ++g) {
          if (in_flight == micro_batches) {
            runner.finish();
            --in_flight;
          }
          runner.launch(plan_of(i, bounds[size_t(g)], bounds[size_t(g) + 1]));
          ++in_flight;
        }
      }
      for (; in_flight > 0; --in_flight) runner.finish();
      decode_s = seconds_since(t_decode);
      const auto spans = model->weights().step_reads(model->config());
      for (int64_t i = 0; i < read_bound; ++i) {  // one rank: no micro-batches in flight
        const auto t_step = std::chrono::steady_clock::now();
        runner.step(plan_of(new_tokens + i, 0, batch));
        step_s.push_back(seconds_since(t_step));
        const auto t_read = std::chrono::steady_clock::now();
        read_bytes = read_once(spans);
        read_s.push_back(seconds_since(t_read));
      }
      runner.shutdown();
    }

    double rss = peak_rss_gib();
    std::vector<double> rss_per_rank(size_t(topo.world_size));
    MPI_Gather(&rss, 1, MPI_DOUBLE, rss_per_rank.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    double shard = double(model->shard_bytes()) / double(1ull << 30);
    std::vector<double> shard_per_rank(size_t(topo.world_size));
    MPI_Gather(&shard, 1, MPI_DOUBLE, shard_per_rank.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (!topo.is_driver()) return 0;

    const double weight_gib = double(ckpt->weight_bytes()) / double(1ull << 30);
    const int64_t prompts = shared_prompt ? 1 : batch;  // prefilled
    const double prefill_tps = double(prompts * prompt_tokens) / prefill_s;
    const double decode_tps = new_tokens > 1 ? double(batch * (new_tokens - 1)) / decode_s : 0.0;
    // Products per token of one layer's matmuls (tp-wide), and attention's q.k and p.v.
    const double hd = double(c.head_dim), hidden = double(c.hidden_size);
    const double q_dim = double(c.num_attention_heads) * hd,
                 kv_dim = double(c.num_key_value_heads) * hd;
    const double layer_params =
        hidden * (2 * q_dim + 2 * kv_dim) + 3 * hidden * double(c.intermediate_size);
    const double pairs = double(prompt_tokens) * double(prompt_tokens + 1) / 2;  // causal
    const double prefill_flop =
        double(c.num_hidden_layers) *
        (2 * layer_params * double(prompts * prompt_tokens) + 4 * pairs * q_dim * double(prompts));
    const double prefill_tflops = prefill_flop / prefill_s / 1e12;
    // A decode step reads every layer's weights and the lm_head once (bf16 on a GPU, as
    // stored on the CPU), spread over the ranks.
    const double step_bytes =
        2 * (double(c.num_hidden_layers) * layer_params + double(c.vocab_size) * hidden);
    const double decode_gbps =
        new_tokens > 1 ? step_bytes / (decode_s / double(new_tokens - 1)) / 1e9 : 0.0;
    // --read-bound: both rates over the bytes the read took (the step's weights as stored), and
    // each turn's decode rate over its read's (read time / step time), as medians of the turns.
    std::vector<double> read_gbps, step_gbps, of_read;
    for (size_t i = 0; i < step_s.size(); ++i) {
      read_gbps.push_back(double(read_bytes) / read_s[i] / 1e9);
      step_gbps.push_back(double(read_bytes) / step_s[i] / 1e9);
      of_read.push_back(read_s[i] / step_s[i]);
    }
    // Traffic per decoded token: the f32 hidden state crosses each stage boundary once; each
    // layer's two row-parallel all-reduces move the hidden state within a stage (ring: about
    // 2 (tp - 1) / tp of it per rank); the last stage, which samples, sends the driver the
    // token's outcome (id, logprob, no alternatives, no error: 16 bytes).
    const double boundary_bytes = pp > 1 ? 4 * hidden : 0;
    const double all_reduce_bytes =
        topo.tp_size > 1 ? 2 * double(c.num_hidden_layers) * 4 * hidden : 0;
    const double sampled_bytes = pp > 1 ? double(encode_outcomes({RowOutcome{}}).size()) : 0;
    if (format == "json") {
      nlohmann::json j = {{"model", model_dir},
                          {"tp", topo.tp_size},
                          {"pp", topo.pp_size},
                          {"micro_batches", micro_batches},
                          {"boundary_bytes_per_token", boundary_bytes},
                          {"all_reduce_bytes_per_token", all_reduce_bytes},
                          {"sampled_bytes_per_token", sampled_bytes},
                          {"threads", omp_get_max_threads()},
                          {"batch", batch},
                          {"prompt_tokens", prompt_tokens},
                          {"shared_prompt", shared_prompt},
                          {"kv_dtype", kv_dtype},
                          {"matmul_precision", precision},
                          {"device", device},
                          {"cpu_linear_path", cpu::linear_path_name(cpu::linear_best_path())},
                          {"prefill_tflops", prefill_tflops},
                          {"decode_weight_gb_per_s", decode_gbps},
                          {"load_s", load_s},
                          {"prefill_tokens_per_s", prefill_tps},
                          {"decode_tokens_per_s", decode_tps},
                          {"weight_gib", weight_gib},
                          {"peak_rss_gib_per_rank", rss_per_rank},
                          {"shard_gib_per_rank", shard_per_rank}};
      if (read_bound > 0) {
        j["read_bound"] = {{"turns", read_bound},
                           {"read_gb_per_s", median(read_gbps)},
                           {"decode_weight_gb_per_s", median(step_gbps)},
                           {"decode_of_read", median(of_read)}};
      }
      std::printf("%s\n", j.dump().c_str());
      return 0;
    }
    std::printf("model            %s (%s, %lld layers, hidden %lld)\n", model_dir.c_str(),
                ckpt->format().c_str(), (long long)c.num_hidden_layers, (long long)c.hidden_size);
    std::printf("tp x pp x thr    %d x %d x %d (%lld micro-batches)\n", topo.tp_size, topo.pp_size,
                omp_get_max_threads(), (long long)micro_batches);
    std::printf("load             %.2f s\n", load_s);
    std::printf("prefill          %.1f tokens/s (batch %lld x %lld tokens)\n", prefill_tps,
                (long long)prompts, (long long)prompt_tokens);
    if (new_tokens > 1)
      std::printf("decode           %.2f tokens/s (batch %lld, %lld steps, %.1f ms/step)\n",
                  decode_tps, (long long)batch, (long long)(new_tokens - 1),
                  1000 * decode_s / double(new_tokens - 1));
    std::printf("achieved         prefill %.3f TFLOP/s, decode %.1f GB/s of weights (%s)\n",
                prefill_tflops, decode_gbps, device.c_str());
    if (read_bound > 0)
      std::printf(
          "read bound       decode steps at %.0f%% of a plain read of the same weights (medians "
          "of %lld turns: read %.1f GB/s, decode %.1f GB/s)\n",
          100 * median(of_read), (long long)read_bound, median(read_gbps), median(step_gbps));
    std::printf("weights          %.3f GiB (whole checkpoint)\n", weight_gib);
    std::printf(
        "traffic/token    %.0f B per stage boundary, %.0f B of all-reduce, %.0f B of "
        "sampled token back to the driver\n",
        boundary_bytes, all_reduce_bytes, sampled_bytes);
    for (int r = 0; r < topo.world_size; ++r)
      std::printf(
          "rank %d           shard %.3f GiB, peak RSS %.3f GiB (%.1f%% of the weight bytes)\n", r,
          shard_per_rank[size_t(r)], rss_per_rank[size_t(r)],
          100.0 * rss_per_rank[size_t(r)] / weight_gib);
  } catch (const Error& e) {
    std::fprintf(stderr, "dsmath-bench-decode: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
