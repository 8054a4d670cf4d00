#include "common/checkpoint/model_config.h"

#include <cmath>

#include "common/core/error.h"
#include "common/core/json_file.h"

namespace dsmath {
namespace {

// Field readers that name the file and key when a value has the wrong type.
struct Fields {
  const Json& j;
  const std::filesystem::path& file;

  bool present(const char* key) const { return j.contains(key) && !j.at(key).is_null(); }

  int64_t integer(const char* key) const {
    const Json& v = j.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    // Some exporters write integral values as floats (e.g. 4096.0).
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>())
      return int64_t(v.get<double>());
    fail(file.string(), ": '", key, "' must be an integer, got ", v.dump());
  }
  int64_t integer(const char* key, int64_t dflt) const {
    return present(key) ? integer(key) : dflt;
  }
  int64_t required_positive(const char* key) const {
    if (!present(key)) fail(file.string(), ": missing required key '", key, "'");
    int64_t v = integer(key);
    if (v <= 0) fail(file.string(), ": '", key, "' must be positive, got ", v);
    return v;
  }
  double number(const char* key, double dflt) const {
    if (!present(key)) return dflt;
    const Json& v = j.at(key);
    if (!v.is_number()) fail(file.string(), ": '", key, "' must be a number, got ", v.dump());
    return v.get<double>();
  }
  bool boolean(const char* key, bool dflt) const {
    if (!present(key)) return dflt;
    const Json& v = j.at(key);
    if (!v.is_boolean()) fail(file.string(), ": '", key, "' must be true or false, got ", v.dump());
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& dflt) const {
    if (!present(key)) return dflt;
    const Json& v = j.at(key);
    if (!v.is_string()) fail(file.string(), ": '", key, "' must be a string, got ", v.dump());
    return v.get<std::string>();
  }
  // eos_token_id is an int in most configs and a list in some (e.g. Llama 3).
  std::vector<int64_t> int_or_list(const char* key) const {
    std::vector<int64_t> out;
    if (!present(key)) return out;
    const Json& v = j.at(key);
    if (v.is_number_integer()) {
      out.push_back(v.get<int64_t>());
    } else if (v.is_array()) {
      for (const Json& e : v) {
        if (!e.is_number_integer())
          fail(file.string(), ": '", key, "' must hold integers, got ", v.dump());
        out.push_back(e.get<int64_t>());
      }
    } else {
      fail(file.string(), ": '", key, "' must be an integer or a list of integers, got ", v.dump());
    }
    return out;
  }
};

Json read_object(const std::filesystem::path& path) {
  Json j = read_json_file(path);
  if (!j.is_object()) fail(path.string(), ": expected a JSON object");
  return j;
}

DType parse_torch_dtype(const std::string& s, const std::filesystem::path& file) {
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16" || s == "half") return DType::F16;
  if (s == "float32" || s == "float") return DType::F32;
  fail(file.string(), ": unsupported torch_dtype '", s,
       "' (expected bfloat16, float16 or float32)");
}

}  // namespace

ModelConfig ModelConfig::load(const std::filesystem::path& config_json) {
  const Json j = read_object(config_json);
  const Fields f{j, config_json};
  const std::string file = config_json.string();
  ModelConfig c;

  if (f.present("architectures")) {
    const Json& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string())
      fail(file, ": 'architectures' must be a non-empty list of strings");
    c.architecture = a[0].get<std::string>();
  }
  c.vocab_size = f.required_positive("vocab_size");
  c.hidden_size = f.required_positive("hidden_size");
  c.intermediate_size = f.required_positive("intermediate_size");
  c.num_hidden_layers = f.required_positive("num_hidden_layers");
  c.num_attention_heads = f.required_positive("num_attention_heads");
  c.num_key_value_heads = f.integer("num_key_value_heads", c.num_attention_heads);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0)
    fail(file, ": num_key_value_heads ", c.num_key_value_heads,
         " must be positive and divide num_attention_heads ", c.num_attention_heads);
  if (f.present("head_dim")) {
    c.head_dim = f.required_positive("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      fail(file, ": hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ",
           c.num_attention_heads, " and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim % 2 != 0) fail(file, ": head_dim ", c.head_dim, " must be even for RoPE");
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings);
  if (c.max_position_embeddings <= 0)
    fail(file, ": max_position_embeddings must be positive, got ", c.max_position_embeddings);
  c.rms_norm_eps = f.number("rms_norm_eps", c.rms_norm_eps);
  if (!(c.rms_norm_eps > 0)) fail(file, ": rms_norm_eps must be positive");
  c.rope_theta = f.number("rope_theta", c.rope_theta);
  if (!(c.rope_theta > 0)) fail(file, ": rope_theta must be positive");

  if (f.present("rope_scaling")) {
    const Json& rs = j.at("rope_scaling");
    if (!rs.is_object()) fail(file, ": 'rope_scaling' must be null or an object");
    // transformers < 4.43 writes "type", later versions "rope_type".
    std::string type;
    for (const char* k : {"rope_type", "type"})
      if (rs.contains(k) && rs.at(k).is_string()) type = rs.at(k).get<std::string>();
    if (type != "linear")
      fail(file, ": rope_scaling type '", type,
           "' is not supported (only null or {\"type\": \"linear\", \"factor\": f})");
    const Fields rf{rs, config_json};
    c.rope_scaling_factor = rf.number("factor", 0.0);
    if (!(c.rope_scaling_factor >= 1.0))
      fail(file, ": rope_scaling factor must be a number >= 1, got ",
           rs.contains("factor") ? rs.at("factor").dump() : "nothing");
  }

  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.bos_token_id = f.integer("bos_token_id", -1);
  c.eos_token_ids = f.int_or_list("eos_token_id");
  c.torch_dtype = parse_torch_dtype(f.string("torch_dtype", "bfloat16"), config_json);

  // Features of LlamaForCausalLM configs that the runtime does not implement: refuse them
  // here rather than produce wrong logits later.
  const std::string act = f.string("hidden_act", "silu");
  if (act != "silu") fail(file, ": hidden_act '", act, "' is not supported (only silu)");
  if (f.boolean("attention_bias", false))
    fail(file, ": attention_bias true is not supported (LLaMA projections have no bias)");
  if (f.boolean("mlp_bias", false))
    fail(file, ": mlp_bias true is not supported (LLaMA projections have no bias)");
  return c;
}

GenerationConfig GenerationConfig::load(const std::filesystem::path& generation_config_json,
                                        const ModelConfig& model) {
  GenerationConfig g;
  g.bos_token_id = model.bos_token_id;
  g.eos_token_ids = model.eos_token_ids;
  if (!std::filesystem::exists(generation_config_json)) return g;

  const Json j = read_object(generation_config_json);
  const Fields f{j, generation_config_json};
  const std::string file = generation_config_json.string();
  g.bos_token_id = f.integer("bos_token_id", g.bos_token_id);
  if (f.present("eos_token_id")) g.eos_token_ids = f.int_or_list("eos_token_id");
  g.do_sample = f.boolean("do_sample", g.do_sample);
  g.temperature = f.number("temperature", g.temperature);
  if (g.temperature < 0) fail(file, ": temperature must be >= 0, got ", g.temperature);
  g.top_p = f.number("top_p", g.top_p);
  if (!(g.top_p > 0 && g.top_p <= 1)) fail(file, ": top_p must be in (0, 1], got ", g.top_p);
  g.top_k = f.integer("top_k", g.top_k);
  if (g.top_k < 0) fail(file, ": top_k must be >= 0, got ", g.top_k);
  g.max_new_tokens = f.integer("max_new_tokens", g.max_new_tokens);
  if (g.max_new_tokens < 0) fail(file, ": max_new_tokens must be >= 0, got ", g.max_new_tokens);
  return g;
}

}  // namespace dsmath
