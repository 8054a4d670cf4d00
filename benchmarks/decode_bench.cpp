// dsmath-bench-decode: end-to-end speed and memory of one model replica on this machine.
//   prefill tokens/s, decode tokens/s at a batch size, peak RSS against the weight bytes.
// Greedy decoding with ignore_eos so every run does the same work.
//   dsmath-bench-decode --model DIR [--batch 1] [--prompt-tokens 32] [--new-tokens 32]
#include <omp.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>

#include "common/checkpoint/checkpoint.h"
#include "common/core/error.h"
#include "worker/model/llama.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  using namespace dsmath;
  std::string model_dir;
  int64_t batch = 1, prompt_tokens = 32, new_tokens = 32;
  int threads = 0;
  CLI::App app{"dsmath-bench-decode: prefill/decode throughput and peak RSS"};
  app.add_option("--model", model_dir, "Checkpoint directory")->required();
  app.add_option("--batch", batch, "Sequences decoded together")->capture_default_str();
  app.add_option("--prompt-tokens", prompt_tokens, "Prompt length per sequence")
      ->capture_default_str();
  app.add_option("--new-tokens", new_tokens, "Decode steps")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (default: all cores)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (threads > 0) omp_set_num_threads(threads);
    const auto t_load = std::chrono::steady_clock::now();
    const Checkpoint ckpt = Checkpoint::open(model_dir);
    LlamaModel model(ckpt);
    const double load_s = seconds_since(t_load);
    const ModelConfig& c = model.config();

    std::vector<KVCache> caches;
    std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) {
      caches.push_back(model.new_cache(prompt_tokens + new_tokens));
      for (int64_t i = 0; i < prompt_tokens; ++i)
        tokens[size_t(b)].push_back(int32_t((1000 + 37 * i + 11 * b) % c.vocab_size));
    }
    auto step = [&](bool prefill) {
      std::vector<SequenceChunk> chunks;
      for (int64_t b = 0; b < batch; ++b) {
        auto& t = tokens[size_t(b)];
        chunks.push_back({&caches[size_t(b)], prefill ? std::span<const int32_t>(t)
                                                      : std::span<const int32_t>(&t.back(), 1)});
      }
      const std::vector<float> logits = model.forward(chunks);
      for (int64_t b = 0; b < batch; ++b) {
        const float* row = logits.data() + b * c.vocab_size;
        tokens[size_t(b)].push_back(int32_t(std::max_element(row, row + c.vocab_size) - row));
      }
    };

    const auto t_prefill = std::chrono::steady_clock::now();
    step(true);
    const double prefill_s = seconds_since(t_prefill);
    const auto t_decode = std::chrono::steady_clock::now();
    for (int64_t i = 1; i < new_tokens; ++i) step(false);
    const double decode_s = seconds_since(t_decode);

    const double weight_gib = double(ckpt.weight_bytes()) / (1024.0 * 1024.0 * 1024.0);
    std::printf("model            %s (%s, %lld layers, hidden %lld)\n", model_dir.c_str(),
                ckpt.format().c_str(), (long long)c.num_hidden_layers, (long long)c.hidden_size);
    std::printf("threads          %d\n", omp_get_max_threads());
    std::printf("load             %.2f s\n", load_s);
    std::printf("prefill          %.1f tokens/s (batch %lld x %lld tokens)\n",
                double(batch * prompt_tokens) / prefill_s, (long long)batch,
                (long long)prompt_tokens);
    if (new_tokens > 1)
      std::printf("decode           %.2f tokens/s (batch %lld, %lld steps, %.1f ms/step)\n",
                  double(batch * (new_tokens - 1)) / decode_s, (long long)batch,
                  (long long)(new_tokens - 1), 1000 * decode_s / double(new_tokens - 1));
    std::printf("weights          %.3f GiB\n", weight_gib);
    std::printf("peak RSS         %.3f GiB (%.1f%% of the weight bytes)\n", peak_rss_gib(),
                100.0 * peak_rss_gib() / weight_gib);
  } catch (const Error& e) {
    std::fprintf(stderr, "dsmath-bench-decode: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
