// dsmath-make-model: writes a random LLaMA checkpoint in exactly the layout of a Hugging Face
// hub repository (config.json, generation_config.json, tokenizer files, weights as
// safetensors, sharded safetensors + index, or PyTorch .bin zip(s) + index).
//
// Weights are a pure function of (seed, tensor name, element index) through splitmix64, so
// every format and shard count of one seed holds bit-identical tensors, and the 13.8 GB
// deepseek-math-7b preset streams to disk chunk by chunk, generated on all cores.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <thread>

#include "common/checkpoint/safetensors_writer.h"
#include "common/checkpoint/torch_bin_writer.h"
#include "common/core/error.h"
#include "common/core/json_file.h"

namespace fs = std::filesystem;
using namespace dsmath;

namespace {

struct Shape {
  int64_t vocab = 102400, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0;
  int64_t max_positions = 4096;
  bool tied = false;
};

Shape preset(const std::string& name) {
  Shape s;
  if (name == "tiny") {
    s.hidden = 64, s.intermediate = 176, s.layers = 2, s.heads = 4, s.kv_heads = 4;
    s.max_positions = 512;
  } else if (name == "small") {
    s.hidden = 384, s.intermediate = 1024, s.layers = 8, s.heads = 6, s.kv_heads = 6;
  } else if (name == "deepseek-math-7b") {
    s.hidden = 4096, s.intermediate = 11008, s.layers = 30, s.heads = 32, s.kv_heads = 32;
  } else {
    fail("--preset: unknown preset '", name, "' (tiny, small, deepseek-math-7b)");
  }
  return s;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// How one tensor's values are drawn: uniform on [center - half_width, center + half_width].
struct Draw {
  uint64_t key;
  float center, half_width;
};

// Linear weights get std 1/sqrt(fan_in) (uniform half-width sqrt(3) std): activations keep
// unit scale through every layer, so even the tiny preset has spread-out logits and
// attention that is far from uniform. For the 7B shape this is ~0.016, close to HF's 0.02.
// RMSNorm weights are 1 +- 0.1 so the norms matter without distorting the scale.
Draw draw_for(const TensorSpec& t, uint64_t seed, int64_t hidden) {
  Draw d{splitmix64(seed ^ fnv1a(t.name)), 0.0f, 0.0f};
  if (t.shape.size() == 1) {
    d.center = 1.0f, d.half_width = 0.1f;
  } else {
    bool embedding = t.name == "model.embed_tokens.weight" || t.name == "lm_head.weight";
    double fan_in = double(embedding ? hidden : t.shape[1]);
    d.half_width = float(std::sqrt(3.0 / fan_in));
  }
  return d;
}

void fill_range(const Draw& d, DType dtype, int64_t first, int64_t count, std::byte* out) {
  for (int64_t i = 0; i < count; ++i) {
    uint64_t r = splitmix64(d.key + uint64_t(first + i));
    float u = (float(r >> 40) + 0.5f) * (1.0f / 16777216.0f);  // 24 bits -> (0, 1)
    float v = d.center + d.half_width * (2.0f * u - 1.0f);
    if (dtype == DType::F32) {
      std::memcpy(out + 4 * i, &v, 4);
    } else {
      uint16_t h = dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
      std::memcpy(out + 2 * i, &h, 2);
    }
  }
}

// HF tensor names and shapes, in the order transformers' state_dict lists them.
std::vector<TensorSpec> llama_tensors(const Shape& s, DType dt) {
  const int64_t head_dim = s.hidden / s.heads;
  std::vector<TensorSpec> v;
  v.push_back({"model.embed_tokens.weight", dt, {s.vocab, s.hidden}});
  for (int64_t l = 0; l < s.layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    v.push_back({p + "self_attn.q_proj.weight", dt, {s.heads * head_dim, s.hidden}});
    v.push_back({p + "self_attn.k_proj.weight", dt, {s.kv_heads * head_dim, s.hidden}});
    v.push_back({p + "self_attn.v_proj.weight", dt, {s.kv_heads * head_dim, s.hidden}});
    v.push_back({p + "self_attn.o_proj.weight", dt, {s.hidden, s.heads * head_dim}});
    v.push_back({p + "mlp.gate_proj.weight", dt, {s.intermediate, s.hidden}});
    v.push_back({p + "mlp.up_proj.weight", dt, {s.intermediate, s.hidden}});
    v.push_back({p + "mlp.down_proj.weight", dt, {s.hidden, s.intermediate}});
    v.push_back({p + "input_layernorm.weight", dt, {s.hidden}});
    v.push_back({p + "post_attention_layernorm.weight", dt, {s.hidden}});
  }
  v.push_back({"model.norm.weight", dt, {s.hidden}});
  if (!s.tied) v.push_back({"lm_head.weight", dt, {s.vocab, s.hidden}});
  return v;
}

const char* torch_dtype_name(DType t) {
  return t == DType::BF16 ? "bfloat16" : t == DType::F16 ? "float16" : "float32";
}

// The fields and spelling of deepseek-ai/deepseek-math-7b-base's config.json.
Json config_json(const Shape& s, DType dt) {
  return Json{{"architectures", {"LlamaForCausalLM"}},
              {"attention_bias", false},
              {"attention_dropout", 0.0},
              {"bos_token_id", 100000},
              {"eos_token_id", 100001},
              {"hidden_act", "silu"},
              {"hidden_size", s.hidden},
              {"initializer_range", 0.02},
              {"intermediate_size", s.intermediate},
              {"max_position_embeddings", s.max_positions},
              {"model_type", "llama"},
              {"num_attention_heads", s.heads},
              {"num_hidden_layers", s.layers},
              {"num_key_value_heads", s.kv_heads},
              {"pretraining_tp", 1},
              {"rms_norm_eps", 1e-6},
              {"rope_scaling", nullptr},
              {"rope_theta", 10000},
              {"tie_word_embeddings", s.tied},
              {"torch_dtype", torch_dtype_name(dt)},
              {"transformers_version", "4.33.1"},
              {"use_cache", true},
              {"vocab_size", s.vocab}};
}

// As the base model ships it: only BOS/EOS, so greedy decoding is the default.
Json generation_config_json() {
  return Json{{"_from_model_config", true},
              {"bos_token_id", 100000},
              {"eos_token_id", 100001},
              {"transformers_version", "4.33.1"}};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out.flush()) fail("cannot write ", path.string());
}

void copy_tokenizer(const fs::path& from, const fs::path& to) {
  if (!fs::exists(from / "tokenizer.json") && !fs::exists(from / "tokenizer.model"))
    fail("--tokenizer: ", from.string(), " has neither tokenizer.json nor tokenizer.model");
  for (const char* f :
       {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json"})
    if (fs::exists(from / f)) fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing);
}

// Weight files of any format left by an earlier run would shadow or mix with the new ones.
void remove_old_weights(const fs::path& dir) {
  static const std::regex weights(
      R"((model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)|model\.safetensors\.index\.json|)"
      R"(pytorch_model\.bin\.index\.json)");
  for (const auto& e : fs::directory_iterator(dir))
    if (std::regex_match(e.path().filename().string(), weights)) fs::remove(e.path());
}

// Contiguous, non-empty shards of roughly equal bytes: tensor i goes to the shard holding
// its byte midpoint, nudged so shard numbers rise by at most one per tensor and all N occur.
std::vector<std::vector<size_t>> split_shards(const std::vector<TensorSpec>& t, int64_t n) {
  if (n < 1 || size_t(n) > t.size())
    fail("--shards: must be between 1 and the number of tensors (", t.size(), "), got ", n);
  double total = 0;
  for (const auto& s : t) total += double(s.nbytes());
  std::vector<std::vector<size_t>> shards(static_cast<size_t>(n));
  double before = 0;
  int64_t prev = 0;
  const int64_t count = int64_t(t.size());
  for (int64_t i = 0; i < count; ++i) {
    double mid = before + double(t[size_t(i)].nbytes()) / 2;
    before += double(t[size_t(i)].nbytes());
    int64_t target = total > 0 ? int64_t(mid * double(n) / total) : 0;
    int64_t s = i == 0 ? 0 : std::clamp(target, prev, prev + 1);
    s = std::min(std::max(s, n - count + i), n - 1);
    shards[size_t(s)].push_back(size_t(i));
    prev = s;
  }
  return shards;
}

std::string shard_name(const char* stem, const char* ext, size_t k, size_t n) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s-%05zu-of-%05zu.%s", stem, k + 1, n, ext);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Writes a random LLaMA checkpoint in the Hugging Face hub layout."};
  std::string preset_name, out_dir, format = "safetensors", dtype_name = "bf16";
  std::string tokenizer = DSMATH_DEFAULT_TOKENIZER;
  int64_t shards = 0, kv_heads = 0, layers = 0;
  uint64_t seed = 0;
  bool tie = false;
  app.add_option("--preset", preset_name, "tiny | small | deepseek-math-7b")->required();
  app.add_option("--out", out_dir, "output directory (created; old weight files removed)")
      ->required();
  app.add_option("--format", format, "safetensors | safetensors-sharded | bin");
  app.add_option("--shards", shards,
                 "number of weight files; more than one writes an index (default 1, "
                 "2 for safetensors-sharded)");
  app.add_option("--dtype", dtype_name, "bf16 | f16 | f32");
  app.add_option("--seed", seed, "weights are a function of the seed only");
  app.add_option("--tokenizer", tokenizer, "directory with tokenizer.json + tokenizer_config.json");
  app.add_option("--kv-heads", kv_heads, "num_key_value_heads (GQA), must divide the heads");
  app.add_option("--layers", layers, "num_hidden_layers (default: the preset's)");
  app.add_flag("--tie-embeddings", tie, "tie lm_head to the embedding (no lm_head.weight)");
  CLI11_PARSE(app, argc, argv);

  try {
    Shape s = preset(preset_name);
    s.tied = tie;
    if (layers != 0) {
      if (layers < 0) fail("--layers: ", layers, " must be positive");
      s.layers = layers;
    }
    if (kv_heads != 0) {
      if (kv_heads < 0 || s.heads % kv_heads != 0)
        fail("--kv-heads: ", kv_heads, " must divide the ", s.heads, " attention heads");
      s.kv_heads = kv_heads;
    }
    DType dt;
    if (dtype_name == "bf16")
      dt = DType::BF16;
    else if (dtype_name == "f16")
      dt = DType::F16;
    else if (dtype_name == "f32")
      dt = DType::F32;
    else
      fail("--dtype: unknown dtype '", dtype_name, "' (bf16, f16, f32)");
    if (format != "safetensors" && format != "safetensors-sharded" && format != "bin")
      fail("--format: unknown format '", format, "' (safetensors, safetensors-sharded, bin)");
    if (shards == 0) shards = format == "safetensors-sharded" ? 2 : 1;

    const fs::path dir(out_dir);
    fs::create_directories(dir);
    remove_old_weights(dir);
    write_text(dir / "config.json", config_json(s, dt).dump(2) + "\n");
    write_text(dir / "generation_config.json", generation_config_json().dump(2) + "\n");
    copy_tokenizer(tokenizer, dir);

    const std::vector<TensorSpec> tensors = llama_tensors(s, dt);
    std::vector<Draw> draws;
    for (const auto& t : tensors) draws.push_back(draw_for(t, seed, s.hidden));
    const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    // Global tensor index -> values; chunks are split across threads (64 MiB per call).
    auto fill_global = [&](size_t index, int64_t first, int64_t count, std::byte* out) {
      const size_t es = dtype_size(tensors[index].dtype);
      const int64_t per = (count + threads - 1) / threads;
      if (count < (int64_t(1) << 16) || threads == 1) {
        fill_range(draws[index], tensors[index].dtype, first, count, out);
        return;
      }
      std::vector<std::thread> pool;
      for (unsigned k = 0; k < threads; ++k) {
        int64_t b = int64_t(k) * per, e = std::min(count, b + per);
        if (b >= e) break;
        pool.emplace_back([&, b, e] {
          fill_range(draws[index], tensors[index].dtype, first + b, e - b, out + size_t(b) * es);
        });
      }
      for (auto& t : pool) t.join();
    };

    const bool bin = format == "bin";
    const bool indexed = shards > 1 || format == "safetensors-sharded";
    const auto groups = split_shards(tensors, indexed ? shards : 1);
    Json weight_map = Json::object();
    uint64_t total = 0;
    for (size_t k = 0; k < groups.size(); ++k) {
      std::vector<TensorSpec> part;
      for (size_t i : groups[k]) part.push_back(tensors[i]);
      auto fill = [&, k](size_t index, int64_t first, int64_t count, std::byte* out) {
        fill_global(groups[k][index], first, count, out);
      };
      std::string file = !indexed ? (bin ? "pytorch_model.bin" : "model.safetensors")
                         : bin    ? shard_name("pytorch_model", "bin", k, groups.size())
                                  : shard_name("model", "safetensors", k, groups.size());
      if (bin)
        write_torch_bin(dir / file, part, fill);
      else
        write_safetensors(dir / file, part, fill);
      for (const auto& t : part) {
        weight_map[t.name] = file;
        total += t.nbytes();
      }
    }
    if (indexed) {
      Json index{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
      write_text(dir / (bin ? "pytorch_model.bin.index.json" : "model.safetensors.index.json"),
                 index.dump(2) + "\n");
    }
    std::cout << "wrote " << preset_name << " (" << tensors.size() << " tensors, " << total
              << " bytes, " << format << ", " << groups.size() << " file(s)) to " << dir.string()
              << "\n";
  } catch (const std::exception& e) {
    std::cerr << "dsmath-make-model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
