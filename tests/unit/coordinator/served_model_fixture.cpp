#include "tests/unit/coordinator/served_model_fixture.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace dsmath::testing {

const ServedModel& served_model() {
  static const ServedModel model = [] {
    namespace fs = std::filesystem;
    const fs::path dir =
        fs::temp_directory_path() / ("dsmath-served-model-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const fs::path tokenizer = fs::path(DSMATH_TEST_DATA) / "tokenizers" / "deepseek_math_like";
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
      fs::copy_file(tokenizer / f, dir / f, fs::copy_options::overwrite_existing);
    std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"],
      "vocab_size": 102400, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 64,
      "bos_token_id": 100000, "eos_token_id": 100001})";
    std::ofstream(dir / "generation_config.json")
        << R"({"bos_token_id": 100000, "eos_token_id": 100001, "do_sample": false})";
    ServedModel m = ServedModel::load(dir);
    fs::remove_all(dir);
    return m;
  }();
  return model;
}

worker::v1::Register group_registration(int32_t kv_blocks, int32_t max_running) {
  worker::v1::Register r;
  r.set_protocol_version(kWorkerLinkVersion);
  r.set_fingerprint(served_model().fingerprint);
  r.set_tp(1);
  r.set_kv_blocks(kv_blocks);
  r.set_block_size(16);
  r.set_max_running(max_running);
  return r;
}

}  // namespace dsmath::testing
