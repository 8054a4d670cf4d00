// Runs the dsmath-make-model binary and loads what it writes.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "common/checkpoint/checkpoint.h"
#include "common/core/json_file.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::TempDir;

struct ToolRun {
  int status;
  std::string output;
};

ToolRun make_model(const std::string& args) {
  std::string cmd = std::string(DSMATH_BIN_DIR) + "/dsmath-make-model " + args + " 2>&1";
  ToolRun r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  r.status = ::pclose(p);
  return r;
}

void make(const std::filesystem::path& out, const std::string& args) {
  ToolRun r = make_model("--out " + out.string() + " " + args);
  ASSERT_EQ(r.status, 0) << r.output;
}

// Every tensor of `b` equals the same-named tensor of `a`, byte for byte.
void expect_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& [name, t] : a.tensors()) {
    const TensorInfo& u = b.tensor(name, t.shape);
    ASSERT_EQ(t.dtype, u.dtype) << name;
    ASSERT_EQ(std::memcmp(t.data, u.data, t.nbytes), 0) << name;
  }
}

TEST(MakeModel, TinyHasTheHubLayoutAndDeepSeekMathConfig) {
  TempDir dir;
  make(dir.path(), "--preset tiny");
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json", "model.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(dir / f)) << f;
  Checkpoint ck = Checkpoint::open(dir.path());
  const ModelConfig& c = ck.config();
  EXPECT_EQ(c.vocab_size, 102400);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 176);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 4);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_EQ(c.bos_token_id, 100000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{100001});
  EXPECT_EQ(c.torch_dtype, DType::BF16);
  EXPECT_EQ(ck.generation_config().eos_token_ids, std::vector<int64_t>{100001});
  Json raw = read_json_file(dir / "config.json");
  EXPECT_EQ(raw["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(raw["model_type"], "llama");
  EXPECT_TRUE(raw["rope_scaling"].is_null());

  EXPECT_EQ(ck.tensors().size(), 2u * 9 + 3);
  ck.tensor("model.embed_tokens.weight", {102400, 64});
  ck.tensor("lm_head.weight", {102400, 64});
  ck.tensor("model.norm.weight", {64});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ck.tensor(p + "self_attn.q_proj.weight", {64, 64});
    ck.tensor(p + "self_attn.k_proj.weight", {64, 64});
    ck.tensor(p + "self_attn.v_proj.weight", {64, 64});
    ck.tensor(p + "self_attn.o_proj.weight", {64, 64});
    ck.tensor(p + "mlp.gate_proj.weight", {176, 64});
    ck.tensor(p + "mlp.up_proj.weight", {176, 64});
    ck.tensor(p + "mlp.down_proj.weight", {64, 176});
    ck.tensor(p + "input_layernorm.weight", {64});
    ck.tensor(p + "post_attention_layernorm.weight", {64});
  }
  // Norm weights near 1, projections centred on 0 with std ~ 1/sqrt(fan_in).
  const TensorInfo& norm = ck.tensor("model.norm.weight");
  for (int64_t i = 0; i < norm.numel(); ++i) {
    float v = load_as_f32(norm.data, norm.dtype, size_t(i));
    ASSERT_TRUE(v > 0.89f && v < 1.11f) << v;
  }
  const TensorInfo& q = ck.tensor("model.layers.0.self_attn.q_proj.weight");
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    double v = load_as_f32(q.data, q.dtype, size_t(i));
    sum += v;
    sq += v * v;
  }
  double mean = sum / double(q.numel()), std = std::sqrt(sq / double(q.numel()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(std, 0.125, 0.01);
}

TEST(MakeModel, SameSeedSameWeightsInEveryFormat) {
  TempDir a, b, c, d;
  make(a.path(), "--preset tiny --seed 7");
  make(b.path(), "--preset tiny --seed 7");
  make(c.path(), "--preset tiny --seed 7 --format safetensors-sharded --shards 3");
  make(d.path(), "--preset tiny --seed 8");
  EXPECT_EQ(test::read_file(a / "model.safetensors"), test::read_file(b / "model.safetensors"));
  for (int k = 1; k <= 3; ++k)
    EXPECT_TRUE(
        std::filesystem::exists(c / ("model-0000" + std::to_string(k) + "-of-00003.safetensors")));
  Checkpoint ca = Checkpoint::open(a.path()), cc = Checkpoint::open(c.path());
  EXPECT_EQ(cc.format(), "safetensors-sharded");
  expect_same_tensors(ca, cc);
  Json index = read_json_file(c / "model.safetensors.index.json");
  EXPECT_EQ(index["metadata"]["total_size"], ca.weight_bytes());
  Checkpoint cd = Checkpoint::open(d.path());
  const TensorInfo& x = ca.tensor("model.embed_tokens.weight");
  EXPECT_NE(std::memcmp(x.data, cd.tensor(x.name).data, x.nbytes), 0);
}

TEST(MakeModel, GqaTiedAndDtypes) {
  TempDir dir;
  make(dir.path(), "--preset tiny --kv-heads 2 --tie-embeddings --dtype f32");
  Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck.config().num_key_value_heads, 2);
  EXPECT_TRUE(ck.config().tie_word_embeddings);
  EXPECT_EQ(ck.config().torch_dtype, DType::F32);
  EXPECT_FALSE(ck.has("lm_head.weight"));
  EXPECT_EQ(ck.tensor("model.layers.1.self_attn.k_proj.weight", {32, 64}).dtype, DType::F32);
  ck.tensor("model.layers.1.self_attn.v_proj.weight", {32, 64});

  // f16 and bf16 hold the same draws, each rounded from the same f32 value.
  TempDir h, bf;
  make(h.path(), "--preset tiny --dtype f16 --seed 3");
  make(bf.path(), "--preset tiny --dtype bf16 --seed 3");
  Checkpoint ch = Checkpoint::open(h.path());
  const TensorInfo& th = ch.tensor("model.layers.0.mlp.up_proj.weight");
  Checkpoint cbf = Checkpoint::open(bf.path());
  const TensorInfo& tb = cbf.tensor("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(th.dtype, DType::F16);
  for (int64_t i = 0; i < th.numel(); ++i)
    ASSERT_NEAR(load_as_f32(th.data, th.dtype, size_t(i)),
                load_as_f32(tb.data, tb.dtype, size_t(i)), 0.002);
}

TEST(MakeModel, BadFlagsExitNonZeroNamingTheFlag) {
  TempDir dir;
  const std::string out = " --out " + dir.path().string();
  struct Case {
    std::string args, fragment;
  };
  for (const Case& c :
       std::vector<Case>{{"--preset huge", "--preset"},
                         {"--preset tiny --kv-heads 3", "--kv-heads"},
                         {"--preset tiny --dtype int8", "--dtype"},
                         {"--preset tiny --format gguf", "--format"},
                         {"--preset tiny --shards 99 --format safetensors-sharded", "--shards"},
                         {"--preset tiny --tokenizer /nonexistent", "--tokenizer"}}) {
    ToolRun r = make_model(c.args + out);
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_NE(r.output.find(c.fragment), std::string::npos) << c.args << ": " << r.output;
  }
}

}  // namespace
}  // namespace dsmath
