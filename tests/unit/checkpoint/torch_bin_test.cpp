#include "common/checkpoint/torch_bin.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/pickle.h"
#include "common/checkpoint/torch_bin_writer.h"
#include "common/checkpoint/zip.h"
#include "common/core/json_file.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::expect_error;
using test::TempDir;
using namespace std::string_literals;

const char* kConfig = R"({"vocab_size": 16, "hidden_size": 8, "intermediate_size": 12,
  "num_hidden_layers": 1, "num_attention_heads": 2, "eos_token_id": 2})";

std::string f32_bytes(int n) {  // element i = i/4 - 1
  std::string s(size_t(n) * 4, '\0');
  for (int i = 0; i < n; ++i) {
    float v = float(i) / 4 - 1;
    std::memcpy(s.data() + 4 * i, &v, 4);
  }
  return s;
}

// A torch zip with the given pickle and storages, for hand-made layouts and corruptions.
void write_zip(const std::filesystem::path& path, const std::string& pkl,
               const std::vector<std::pair<std::string, std::string>>& storages,
               bool force_zip64 = false) {
  ZipWriter zip(path, force_zip64);
  zip.add("archive/data.pkl", pkl);
  for (const auto& [key, bytes] : storages) zip.add("archive/data/" + key, bytes);
  zip.add("archive/version", "3\n");
  zip.finish();
}

PickledTensor f32_tensor(const std::string& name, std::vector<int64_t> shape,
                         std::vector<int64_t> stride, int64_t offset, int64_t storage_numel,
                         const std::string& key = "0") {
  PickledTensor t;
  t.name = name;
  t.dtype = DType::F32;
  t.storage_key = key;
  t.storage_numel = storage_numel;
  t.storage_offset = offset;
  t.shape = std::move(shape);
  t.stride = std::move(stride);
  return t;
}

std::vector<TensorInfo> read(const std::filesystem::path& p) {
  MappedFile f(p);
  return read_torch_bin(f);  // pointers dangle after this; tests only look at metadata
}

struct Sample : test::SampleTensors {
  void write(const std::filesystem::path& p, bool zip64 = false) const {
    write_torch_bin(p, specs, filler(), zip64);
  }
};

void expect_values(const TensorInfo& t) {
  test::expect_sample_values(t);
}

TEST(TorchBin, WriterRoundTripsThroughCheckpoint) {
  for (bool zip64 : {false, true}) {
    SCOPED_TRACE(zip64 ? "zip64" : "zip32");
    TempDir dir;
    test::write_file(dir / "config.json", kConfig);
    Sample s;
    s.write(dir / "pytorch_model.bin", zip64);
    Checkpoint ck = Checkpoint::open(dir.path());
    EXPECT_EQ(ck.format(), "bin");
    ASSERT_EQ(ck.tensors().size(), 3u);
    MappedFile raw(dir / "pytorch_model.bin");
    for (const TensorSpec& spec : s.specs) {
      const TensorInfo& t = ck.tensor(spec.name, spec.shape);
      EXPECT_EQ(t.dtype, spec.dtype);
      EXPECT_EQ(t.nbytes, spec.nbytes());
      expect_values(t);
    }
    // Archive folder named after the file stem, entry data 64-byte aligned, CRCs right.
    EXPECT_EQ(read_zip_directory(raw).front().name, "pytorch_model/data.pkl");
    for (const ZipEntry& e : read_zip_directory(raw)) {
      EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
      EXPECT_EQ(crc32_update(0, raw.bytes().data() + e.data_offset, e.size), e.crc32) << e.name;
    }
  }
}

TEST(TorchBin, ShardedIndex) {
  TempDir dir;
  test::write_file(dir / "config.json", kConfig);
  Sample s;
  std::vector<TensorSpec> first(s.specs.begin(), s.specs.begin() + 1);
  std::vector<TensorSpec> second(s.specs.begin() + 1, s.specs.end());
  std::vector<std::vector<std::byte>> b1(s.bufs.begin(), s.bufs.begin() + 1);
  std::vector<std::vector<std::byte>> b2(s.bufs.begin() + 1, s.bufs.end());
  write_torch_bin(dir / "pytorch_model-00001-of-00002.bin", first, fill_from_buffers(b1, first));
  write_torch_bin(dir / "pytorch_model-00002-of-00002.bin", second, fill_from_buffers(b2, second));
  Json index = {{"metadata", {{"total_size", 66}}},
                {"weight_map",
                 {{"a.bf16", "pytorch_model-00001-of-00002.bin"},
                  {"b.f16", "pytorch_model-00002-of-00002.bin"},
                  {"c.f32", "pytorch_model-00002-of-00002.bin"}}}};
  test::write_file(dir / "pytorch_model.bin.index.json", index.dump());
  Checkpoint ck = Checkpoint::open(dir.path());
  EXPECT_EQ(ck.format(), "bin-sharded");
  for (const auto& [name, t] : ck.tensors()) expect_values(t);
  std::filesystem::remove(dir / "pytorch_model-00002-of-00002.bin");
  expect_error([&] { Checkpoint::open(dir.path()); },
               {"pytorch_model.bin.index.json", "pytorch_model-00002-of-00002.bin", "missing"});
}

TEST(TorchBin, StorageOffsetAndSharedStorage) {
  TempDir dir;
  const auto p = dir / "m.bin";
  // One storage of 12 floats: a whole [3, 4] matrix, its row 2 via storage_offset, and a tied
  // alias of the matrix; a zero-size tensor; a [4, 1] column with a free stride on dim 1.
  write_zip(
      p,
      pickle_state_dict(
          {f32_tensor("m", {3, 4}, {4, 1}, 0, 12), f32_tensor("row2", {4}, {1}, 8, 12),
           f32_tensor("tied", {3, 4}, {4, 1}, 0, 12), f32_tensor("empty", {0, 4}, {4, 1}, 12, 12),
           f32_tensor("col", {4, 1}, {1, 7}, 4, 12)}),
      {{"0", f32_bytes(12)}});
  MappedFile f(p);
  std::vector<TensorInfo> ts = read_torch_bin(f);
  ASSERT_EQ(ts.size(), 5u);
  EXPECT_EQ(ts[0].data, ts[2].data);
  EXPECT_EQ(ts[1].data, ts[0].data + 32);
  EXPECT_EQ(load_as_f32(ts[1].data, DType::F32, 0), 1.0f);  // element 8 = 8/4 - 1
  EXPECT_EQ(ts[3].nbytes, 0u);
  EXPECT_EQ(load_as_f32(ts[4].data, DType::F32, 3), 0.75f);  // storage element 7
}

// Each corruption gives one error naming the file (and the tensor or global at fault).
class TorchBinCorrupt : public ::testing::Test {
 protected:
  TempDir dir;
  std::filesystem::path file = dir / "bad.bin";
  std::string good_pkl = pickle_state_dict({f32_tensor("w", {3, 4}, {4, 1}, 0, 12)});

  void expect_bad(std::initializer_list<std::string> fragments) {
    std::vector<std::string> all(fragments);
    all.push_back(file.string());
    try {
      read(file);
    } catch (const Error& e) {
      for (const std::string& f : all)
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos)
            << "message: " << e.what() << "\nlacks: " << f;
      return;
    }
    ADD_FAILURE() << "no dsmath::Error thrown";
  }
  void write_pkl(const std::string& pkl) { write_zip(file, pkl, {{"0", f32_bytes(12)}}); }
  static std::string replace(std::string s, const std::string& from, const std::string& to) {
    size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? s : s.replace(at, from.size(), to);
  }
};

TEST_F(TorchBinCorrupt, GoodFilePasses) {
  write_pkl(good_pkl);
  EXPECT_EQ(read(file).size(), 1u);
}

TEST_F(TorchBinCorrupt, ForbiddenGlobals) {
  const std::string rebuild = "ctorch._utils\n_rebuild_tensor_v2\n";
  write_pkl(replace(good_pkl, rebuild, "cos\nsystem\n"));
  expect_bad({"global 'os.system'", "not allowed"});
  write_pkl(replace(good_pkl, rebuild, "cbuiltins\neval\n"));
  expect_bad({"global 'builtins.eval'"});
  write_pkl(replace(good_pkl, "ctorch\nFloatStorage\n", "ctorch\nLongStorage\n"));
  expect_bad({"global 'torch.LongStorage'"});
  // The same through STACK_GLOBAL (protocol 4), which names module and attribute by strings.
  write_pkl(
      "\x80\x04\x8c\x08"
      "builtins\x8c\x04"
      "exec\x93.");
  expect_bad({"global 'builtins.exec'"});
  // INST / OBJ / NEWOBJ and other opcodes torch never writes are refused, not interpreted.
  write_pkl("\x80\x02(ios\nsystem\nX\x02\x00\x00\x00ls."s);
  expect_bad({"opcode 0x69"});
}

TEST_F(TorchBinCorrupt, MalformedPickles) {
  write_pkl(good_pkl.substr(0, good_pkl.size() / 2));
  expect_bad({"data.pkl", "truncated"});
  write_pkl("\x80\x02]q\x00."s);
  expect_bad({"holds a list, not a dict of tensors"});
  write_pkl("\x80\x02}(X\x01\x00\x00\x00wK\x05u."s);
  expect_bad({"entry 'w' is a int, not a tensor"});
  write_pkl("\x80\x02h\x07.");
  expect_bad({"memo slot 7"});
  write_pkl("\x80\x02t.");
  expect_bad({"MARK"});
  write_pkl("\x80\x02.");
  expect_bad({"empty stack"});
  write_pkl(std::string("\x80\x02}X\xff\xff\xff\x7f") + "ab");
  expect_bad({"truncated"});
}

TEST_F(TorchBinCorrupt, TensorLayoutErrors) {
  write_pkl(pickle_state_dict({f32_tensor("w", {3, 4}, {1, 3}, 0, 12)}));
  expect_bad({"'w'", "not contiguous"});
  write_pkl(pickle_state_dict({f32_tensor("w", {3, 4}, {4, 1}, 4, 12)}));
  expect_bad({"'w'", "storage_offset 4", "runs past"});
  write_pkl(pickle_state_dict({f32_tensor("w", {3, 4}, {4, 1}, 0, 16)}));
  expect_bad({"'w'", "storage 0", "48 bytes"});
  write_pkl(pickle_state_dict({f32_tensor("w", {3, 4}, {4, 1}, 0, 12, "9")}));
  expect_bad({"'w'", "archive/data/9 is missing"});
  write_pkl(pickle_state_dict({f32_tensor("w", {3, 4}, {4}, 0, 12)}));
  expect_bad({"'w'", "2 dims but 1 strides"});
  write_pkl(pickle_state_dict({f32_tensor("w", {3, -4}, {4, 1}, 0, 12)}));
  expect_bad({"'w'", "negative dimension"});
  // Found with tests/fuzz/torch_bin_fuzz (kept in its corpus): with a zero dim numel is 0, but
  // the contiguity check multiplied the later dims (2^32 x 2^32) in int64: undefined behaviour.
  write_zip(
      file,
      pickle_state_dict({f32_tensor("w", {0, 1ll << 32, 1ll << 32}, {0, 1ll << 32, 1}, 0, 0)}),
      {{"0", ""}});
  expect_bad({"'w'", "dims 1 onwards hold more than 2^63 elements"});
}

// The reader on bytes in memory (what the fuzz target feeds it) equals the one on a mapped file.
TEST_F(TorchBinCorrupt, BytesInMemoryReadLikeTheMappedFile) {
  write_pkl(good_pkl);
  const std::string bytes = test::read_file(file);
  const std::span<const std::byte> span(reinterpret_cast<const std::byte*>(bytes.data()),
                                        bytes.size());
  const std::vector<TensorInfo> tensors = read_torch_bin(span, "in-memory.bin");
  ASSERT_EQ(tensors.size(), 1u);
  EXPECT_EQ(tensors[0].shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(tensors[0].file, "in-memory.bin");
  EXPECT_EQ(std::memcmp(tensors[0].data, f32_bytes(12).data(), 48), 0);
  EXPECT_EQ(read_zip_directory(span, "in-memory.bin").size(), 3u);
  test::expect_error([&] { read_torch_bin(span.first(10), "in-memory.bin"); },
                     {"in-memory.bin", "not a zip file"});
}

TEST_F(TorchBinCorrupt, ZipErrors) {
  write_pkl(good_pkl);
  const std::string good = test::read_file(file);
  test::write_file(file, good.substr(0, good.size() / 2));
  expect_bad({"truncated"});
  test::write_file(file, good.substr(0, 10));
  expect_bad({"not a zip file"});
  std::string cut = good;
  const size_t cd = cut.find("PK\x01\x02");
  ASSERT_NE(cd, std::string::npos);
  const size_t eocd = cut.rfind("PK\x05\x06");
  std::string bad = cut;
  bad[eocd + 19] = char(0x7f);  // central directory offset now points past the file
  test::write_file(file, bad);
  expect_bad({"central directory", "outside the file"});
  // A deflated entry: flip the method field of the first central record.
  bad = cut;
  bad[cd + 10] = 8;
  test::write_file(file, bad);
  expect_bad({"'archive/data.pkl'", "compressed (method 8)"});
  // A local header offset past the end.
  bad = cut;
  bad[cd + 45] = char(0x7f);
  test::write_file(file, bad);
  expect_bad({"'archive/data.pkl'", "no local header"});
  // A data size past the end.
  bad = cut;
  bad[cd + 23] = bad[cd + 27] = char(0x7f);
  test::write_file(file, bad);
  expect_bad({"'archive/data.pkl'", "runs past the end"});
  // No data.pkl at all.
  {
    ZipWriter zip(file);
    zip.add("archive/version", "3\n");
    zip.finish();
  }
  expect_bad({"no <archive>/data.pkl"});
  // The pre-1.6 format: a bare pickle stream.
  test::write_file(file, good_pkl);
  expect_bad({"legacy"});
}

}  // namespace
}  // namespace dsmath
