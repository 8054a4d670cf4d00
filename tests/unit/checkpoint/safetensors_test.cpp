#include "common/checkpoint/safetensors.h"

#include <gtest/gtest.h>

#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/safetensors_writer.h"
#include "common/core/json_file.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::expect_error;
using test::TempDir;

const char* kConfig = R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 16,
  "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
  "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})";

struct Sample : test::SampleTensors {
  void write(const std::filesystem::path& file) const { write_safetensors(file, specs, filler()); }
};

void expect_values(const TensorInfo& t) {
  test::expect_sample_values(t);
}

// A safetensors file from a raw header string and data bytes, for corruptions.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
  return out + header + data;
}

TEST(Safetensors, WriterRoundTripsThroughCheckpoint) {
  TempDir dir;
  test::write_file(dir / "config.json", kConfig);
  Sample s;
  s.write(dir / "model.safetensors");
  Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck.format(), "safetensors");
  EXPECT_EQ(ck.config().hidden_size, 8);
  EXPECT_EQ(ck.generation_config().bos_token_id, 1);  // no generation_config.json
  ASSERT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.weight_bytes(), 24u + 10u + 32u);
  for (const TensorSpec& spec : s.specs) {
    const TensorInfo& t = ck.tensor(spec.name, spec.shape);
    EXPECT_EQ(t.dtype, spec.dtype);
    EXPECT_EQ(t.nbytes, spec.nbytes());
    EXPECT_EQ(t.file, dir / "model.safetensors");
    expect_values(t);
  }
  // The header is padded to 8 bytes and tagged format=pt, as the Python library writes it.
  std::string bytes = test::read_file(dir / "model.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint8_t(bytes[size_t(i)]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(Json::parse(bytes.substr(8, n))["__metadata__"]["format"], "pt");
}

TEST(Safetensors, DataPointsIntoTheMapping) {
  TempDir dir;
  Sample s;
  s.write(dir / "m.safetensors");
  MappedFile f(dir / "m.safetensors");
  for (const TensorInfo& t : read_safetensors(f)) {
    EXPECT_GE(t.data, f.bytes().data());
    EXPECT_LE(t.data + t.nbytes, f.bytes().data() + f.size());
  }
}

// The reader on bytes in memory (what the fuzz target feeds it) equals the one on a mapped file.
TEST(Safetensors, BytesInMemoryReadLikeTheMappedFile) {
  TempDir dir;
  Sample().write(dir / "m.safetensors");
  const std::string bytes = test::read_file(dir / "m.safetensors");
  const std::span<const std::byte> span(reinterpret_cast<const std::byte*>(bytes.data()),
                                        bytes.size());
  MappedFile f(dir / "m.safetensors");
  const std::vector<TensorInfo> mapped = read_safetensors(f);
  const std::vector<TensorInfo> in_memory = read_safetensors(span, "in-memory.safetensors");
  ASSERT_EQ(in_memory.size(), mapped.size());
  for (size_t i = 0; i < mapped.size(); ++i) {
    EXPECT_EQ(in_memory[i].name, mapped[i].name);
    EXPECT_EQ(in_memory[i].shape, mapped[i].shape);
    EXPECT_EQ(in_memory[i].data - span.data(), mapped[i].data - f.bytes().data());
    EXPECT_EQ(in_memory[i].file, "in-memory.safetensors");
  }
  expect_error([&] { read_safetensors(span.first(5), "in-memory.safetensors"); },
               {"in-memory.safetensors", "truncated"});
}

TEST(Safetensors, ShardedIndexUsesShardNamesFromTheIndex) {
  TempDir dir;
  test::write_file(dir / "config.json", kConfig);
  Sample s;
  // The DeepSeekMath RL repo's spelling: six digits after "of".
  std::vector<TensorSpec> first(s.specs.begin(), s.specs.begin() + 2), second{s.specs[2]};
  std::vector<std::vector<std::byte>> b1(s.bufs.begin(), s.bufs.begin() + 2), b2{s.bufs[2]};
  write_safetensors(dir / "model-00001-of-000002.safetensors", first, fill_from_buffers(b1, first));
  write_safetensors(dir / "model-00002-of-000002.safetensors", second,
                    fill_from_buffers(b2, second));
  Json index = {{"metadata", {{"total_size", 66}}},
                {"weight_map",
                 {{"a.bf16", "model-00001-of-000002.safetensors"},
                  {"b.f16", "model-00001-of-000002.safetensors"},
                  {"c.f32", "model-00002-of-000002.safetensors"}}}};
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck.format(), "safetensors-sharded");
  ASSERT_EQ(ck.tensors().size(), 3u);
  EXPECT_EQ(ck.tensor("c.f32").file, dir / "model-00002-of-000002.safetensors");
  for (const auto& [name, t] : ck.tensors()) expect_values(t);

  // A shard named by the index but absent.
  index["weight_map"]["c.f32"] = "model-00003-of-000003.safetensors";
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error([&] { Checkpoint::open(dir.path()); },
               {"model.safetensors.index.json", "model-00003-of-000003.safetensors", "missing"});
  // A tensor the index places in a shard that lacks it.
  index["weight_map"]["c.f32"] = "model-00001-of-000002.safetensors";
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error([&] { Checkpoint::open(dir.path()); },
               {"model-00001-of-000002.safetensors", "'c.f32'", "not in the file"});
  // A tensor in two shards.
  index["weight_map"]["c.f32"] = "model-00002-of-000002.safetensors";
  index["weight_map"]["a.bf16"] = "model-00002-of-000002.safetensors";
  write_safetensors(dir / "model-00002-of-000002.safetensors", s.specs,
                    fill_from_buffers(s.bufs, s.specs));
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error([&] { Checkpoint::open(dir.path()); }, {"'a.bf16'", "appears in both"});
  // A shard path leaving the directory.
  index["weight_map"]["a.bf16"] = "../model-00002-of-000002.safetensors";
  test::write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error([&] { Checkpoint::open(dir.path()); }, {"'a.bf16'", "not a plain file name"});
}

TEST(Safetensors, MissingFilesAndTensorsAndWrongShapes) {
  TempDir dir;
  expect_error([&] { Checkpoint::open(dir.path()); }, {"config.json", "missing"});
  test::write_file(dir / "config.json", kConfig);
  expect_error([&] { Checkpoint::open(dir.path()); }, {dir.path().string(), "no weights found"});
  Sample().write(dir / "model.safetensors");
  Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_TRUE(ck.has("a.bf16"));
  EXPECT_FALSE(ck.has("lm_head.weight"));
  expect_error([&] { ck.tensor("lm_head.weight"); }, {dir.path().string(), "'lm_head.weight'"});
  expect_error(
      [&] {
        ck.tensor("a.bf16", {4, 3});
      },
      {"model.safetensors", "'a.bf16'", "shape [3, 4]", "expected [4, 3]"});
  expect_error([&] { Checkpoint::open(dir / "nope"); }, {"nope", "does not exist"});
}

// Each corruption of a good file gives one error naming the file (and tensor where one is
// at fault); none may read outside the mapping (run under ASan to see that too).
TEST(Safetensors, CorruptedFiles) {
  TempDir dir;
  Sample().write(dir / "good.safetensors");
  const std::string good = test::read_file(dir / "good.safetensors");
  const std::string file = (dir / "bad.safetensors").string();
  auto check = [&](const std::string& bytes, std::initializer_list<std::string> fragments) {
    test::write_file(file, bytes);
    MappedFile f(file);
    expect_error([&] { read_safetensors(f); }, fragments);
  };
  const std::string data(66, '\x11');
  const std::string ok = R"("b": {"dtype": "F16", "shape": [5], "data_offsets": [0, 10]})";

  check(good.substr(0, 5), {file, "truncated"});
  check(good.substr(0, good.size() - 3), {file, "out of range", "truncated"});
  check(good.substr(0, 40), {file, "truncated", "header claims"});
  std::string absurd = good;
  absurd[6] = '\x7f';  // header length ~ 2^54
  check(absurd, {file, "absurd"});
  check(raw_file("{\"a\": {\"dtype\": ", data), {file, "invalid safetensors header JSON"});
  check(raw_file("[1, 2]", data), {file, "not a JSON object"});
  check(raw_file(R"({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", data),
        {file, "'a'", "unknown or unsupported dtype \"F64\""});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", data),
        {file, "'a'", "needs 24 bytes", "give 20"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [60, 68]}})", data),
        {file, "'a'", "[60, 68] out of range"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", data),
        {file, "'a'", "out of range"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", data),
        {file, "'a'", "non-negative"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 2],)"
                 R"( "data_offsets": [0, 8]}})",
                 data),
        {file, "'a'", "overflow"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [4, 20]}, )" + ok + "}",
                 data),
        {file, "overlaps", "'a'", "'b'"});
  check(raw_file(R"({"a": {"dtype": "F32", "shape": [2]}})", data), {file, "'a'", "data_offsets"});
  // A good hand-made file passes, so the checks above fail for the reason they name.
  test::write_file(file, raw_file("{" + ok + "}", data));
  MappedFile f(file);
  EXPECT_EQ(read_safetensors(f).size(), 1u);
}

}  // namespace
}  // namespace dsmath
