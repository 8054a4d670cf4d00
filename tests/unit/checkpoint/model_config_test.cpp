#include "common/checkpoint/model_config.h"

#include <gtest/gtest.h>

#include "common/core/json_file.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::expect_error;
using test::TempDir;

// The DeepSeekMath 7B base config.json fields (plus an unknown key that must be ignored).
Json deepseek_config() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 100000, "eos_token_id": 100001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 30,
    "num_key_value_heads": 32, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
    "rope_scaling": null, "rope_theta": 10000, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
    "vocab_size": 102400, "some_future_key": {"x": [1, 2]}})");
}

ModelConfig load(const TempDir& dir, const Json& j) {
  test::write_file(dir / "config.json", j.dump());
  return ModelConfig::load(dir / "config.json");
}

TEST(ModelConfig, DeepSeekMath7B) {
  TempDir dir;
  ModelConfig c = load(dir, deepseek_config());
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 102400);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 1.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 100000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{100001});
  EXPECT_EQ(c.torch_dtype, DType::BF16);
}

TEST(ModelConfig, GqaHeadDimTiedFloatThetaEosList) {
  TempDir dir;
  Json j = deepseek_config();
  j.erase("num_key_value_heads");
  ModelConfig mha = load(dir, j);
  EXPECT_EQ(mha.num_key_value_heads, 32);  // absent means MHA

  j["num_key_value_heads"] = 8;
  j["head_dim"] = 64;
  j["tie_word_embeddings"] = true;
  j["rope_theta"] = 500000.0;
  j["eos_token_id"] = {128001, 128009};
  j["torch_dtype"] = "float16";
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  ModelConfig c = load(dir, j);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128009}));
  EXPECT_EQ(c.torch_dtype, DType::F16);
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 4.0);

  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2}};
  j["torch_dtype"] = "float32";
  c = load(dir, j);
  EXPECT_DOUBLE_EQ(c.rope_scaling_factor, 2.0);
  EXPECT_EQ(c.torch_dtype, DType::F32);
}

TEST(ModelConfig, Errors) {
  TempDir dir;
  const std::string file = (dir / "config.json").string();
  struct Case {
    const char* key;
    Json value;  // null: erase the key
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {"hidden_size", nullptr, "missing required key 'hidden_size'"},
      {"vocab_size", "big", "'vocab_size' must be an integer"},
      {"num_attention_heads", 0, "'num_attention_heads' must be positive"},
      {"num_key_value_heads", 5, "num_key_value_heads 5 must be positive and divide"},
      {"rope_scaling", Json{{"type", "dynamic"}, {"factor", 2.0}}, "rope_scaling type 'dynamic'"},
      {"rope_scaling", Json{{"rope_type", "llama3"}, {"factor", 8.0}}, "'llama3' is not supported"},
      {"rope_scaling", Json{{"type", "linear"}}, "rope_scaling factor"},
      {"eos_token_id", "</s>", "'eos_token_id' must be an integer or a list"},
      {"torch_dtype", "int8", "unsupported torch_dtype 'int8'"},
      {"hidden_act", "gelu", "hidden_act 'gelu' is not supported"},
      {"attention_bias", true, "attention_bias"},
      {"tie_word_embeddings", "yes", "'tie_word_embeddings' must be true or false"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.fragment);
    Json j = deepseek_config();
    if (c.value.is_null())
      j.erase(c.key);
    else
      j[c.key] = c.value;
    expect_error([&] { load(dir, j); }, {file, c.fragment});
  }
  test::write_file(dir / "config.json", "{\"vocab_size\": ");
  expect_error([&] { ModelConfig::load(dir / "config.json"); }, {file, "invalid JSON"});
  expect_error([&] { ModelConfig::load(dir / "absent.json"); }, {"absent.json"});
}

TEST(GenerationConfig, LoadsAndDefaultsToModel) {
  TempDir dir;
  ModelConfig model = load(dir, deepseek_config());
  GenerationConfig absent = GenerationConfig::load(dir / "generation_config.json", model);
  EXPECT_EQ(absent.bos_token_id, 100000);
  EXPECT_EQ(absent.eos_token_ids, std::vector<int64_t>{100001});
  EXPECT_FALSE(absent.do_sample);

  test::write_file(dir / "generation_config.json",
                   R"({"bos_token_id": 100000, "eos_token_id": [100001, 7], "do_sample": true,
                       "temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_new_tokens": 256,
                       "transformers_version": "4.33.1"})");
  GenerationConfig g = GenerationConfig::load(dir / "generation_config.json", model);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{100001, 7}));
  EXPECT_TRUE(g.do_sample);
  EXPECT_DOUBLE_EQ(g.temperature, 0.7);
  EXPECT_DOUBLE_EQ(g.top_p, 0.95);
  EXPECT_EQ(g.top_k, 40);
  EXPECT_EQ(g.max_new_tokens, 256);

  test::write_file(dir / "generation_config.json", R"({"top_p": 1.5})");
  expect_error([&] { GenerationConfig::load(dir / "generation_config.json", model); },
               {"generation_config.json", "top_p"});
}

}  // namespace
}  // namespace dsmath
