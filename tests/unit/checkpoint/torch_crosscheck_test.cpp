// Cross-checks with the real readers: torch.load (Debian python3-torch) and, where the pinned
// reference environment exists, transformers' LlamaForCausalLM.from_pretrained. Skipped when
// the Python side is not installed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>

#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/torch_bin.h"
#include "common/checkpoint/torch_bin_writer.h"
#include "common/core/json_file.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::TempDir;

const char* kTorchPython = "/usr/bin/python3";
const char* kHfPython = "/opt/hfref/bin/python";
const std::string kScript =
    std::string(DSMATH_TEST_DATA) + "/../../tools/check_checkpoint_with_torch.py";

bool has_torch(const char* python) {
  return std::system((std::string(python) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
}

Json run_script(const char* python, const std::string& args) {
  std::string out;
  FILE* p =
      ::popen((std::string(python) + " " + kScript + " " + args + " 2>/dev/null").c_str(), "r");
  if (!p) return Json();
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  EXPECT_EQ(status, 0) << args;
  return status == 0 ? Json::parse(out) : Json();
}

void make(const std::filesystem::path& out, const std::string& args) {
  std::string cmd = std::string(DSMATH_BIN_DIR) + "/dsmath-make-model --out " + out.string() + " " +
                    args + " >/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

// Python's view of every tensor equals ours: same names, dtypes, shapes and value sums.
void expect_matches(const Json& py, const std::vector<const TensorInfo*>& ours) {
  ASSERT_TRUE(py.contains("tensors"));
  ASSERT_EQ(py["tensors"].size(), ours.size());
  for (const TensorInfo* t : ours) {
    SCOPED_TRACE(t->name);
    ASSERT_TRUE(py["tensors"].contains(t->name));
    const Json& p = py["tensors"][t->name];
    EXPECT_EQ(p["dtype"], std::string(dtype_name(t->dtype)));
    EXPECT_EQ(p["shape"].get<std::vector<int64_t>>(), t->shape);
    double sum = 0, abs_sum = 0;
    for (int64_t i = 0; i < t->numel(); ++i) {
      double v = load_as_f32(t->data, t->dtype, size_t(i));
      sum += v;
      abs_sum += std::fabs(v);
    }
    EXPECT_NEAR(p["sum"].get<double>(), sum, 1e-9 * abs_sum + 1e-9);
    EXPECT_NEAR(p["abs_sum"].get<double>(), abs_sum, 1e-9 * abs_sum + 1e-9);
  }
}

std::vector<const TensorInfo*> all(const Checkpoint& ck) {
  std::vector<const TensorInfo*> v;
  for (const auto& [name, t] : ck.tensors()) v.push_back(&t);
  return v;
}

TEST(TorchCrossCheck, TorchLoadReadsWhatWeWrite) {
  if (!has_torch(kTorchPython)) GTEST_SKIP() << kTorchPython << " has no torch";
  TempDir a, b;
  make(a.path(), "--preset tiny --kv-heads 2 --format bin --shards 2 --seed 5");
  make(b.path(), "--preset tiny --dtype f16 --format safetensors --seed 5 --tie-embeddings");
  Checkpoint ca = Checkpoint::open(a.path()), cb = Checkpoint::open(b.path());
  expect_matches(run_script(kTorchPython, a.path().string()), all(ca));
  expect_matches(run_script(kTorchPython, b.path().string()), all(cb));
}

TEST(TorchCrossCheck, TorchLoadReadsZip64) {
  if (!has_torch(kTorchPython)) GTEST_SKIP() << kTorchPython << " has no torch";
  TempDir dir;
  std::vector<TensorSpec> specs = {{"x", DType::BF16, {7, 3}}, {"y", DType::F32, {5}}};
  auto fill = [&](size_t index, int64_t first, int64_t count, std::byte* out) {
    for (int64_t i = 0; i < count; ++i) {
      float v = float(index * 100 + size_t(first + i)) / 8;
      if (specs[index].dtype == DType::F32) {
        std::memcpy(out + 4 * i, &v, 4);
      } else {
        uint16_t h = f32_to_bf16(v);
        std::memcpy(out + 2 * i, &h, 2);
      }
    }
  };
  write_torch_bin(dir / "z.bin", specs, fill, /*force_zip64=*/true);
  MappedFile f(dir / "z.bin");
  std::vector<TensorInfo> ts = read_torch_bin(f);
  expect_matches(run_script(kTorchPython, (dir / "z.bin").string()), {&ts[0], &ts[1]});
}

TEST(TorchCrossCheck, ReadsWhatTorchSaveWrites) {
  if (!has_torch(kTorchPython)) GTEST_SKIP() << kTorchPython << " has no torch";
  TempDir dir;
  const std::string file = (dir / "sample.bin").string();
  ASSERT_EQ(
      std::system((std::string(kTorchPython) + " " + kScript + " --write-sample " + file).c_str()),
      0);
  MappedFile f(file);
  std::vector<TensorInfo> ts = read_torch_bin(f);
  std::map<std::string, const TensorInfo*> by_name;
  std::vector<const TensorInfo*> ptrs;
  for (const TensorInfo& t : ts) by_name[t.name] = &t, ptrs.push_back(&t);
  expect_matches(run_script(kTorchPython, file), ptrs);
  ASSERT_EQ(by_name.size(), 4u);
  EXPECT_EQ(by_name["0.weight"]->data, by_name["1.weight"]->data);  // tied: one storage
  EXPECT_EQ(by_name["half"]->shape, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(by_name["param"]->dtype, DType::F32);

  ASSERT_EQ(std::system((std::string(kTorchPython) + " " + kScript + " --write-sample " + file +
                         " --transposed")
                            .c_str()),
            0);
  MappedFile g(file);
  test::expect_error([&] { read_torch_bin(g); }, {file, "'transposed'", "not contiguous"});
}

TEST(TorchCrossCheck, TransformersLoadsEveryFormatWithAllKeys) {
  if (!has_torch(kHfPython)) GTEST_SKIP() << kHfPython << " (transformers 4.40.2) not installed";
  TempDir st, bin;
  make(st.path(), "--preset tiny --format safetensors-sharded --shards 2 --seed 9");
  make(bin.path(), "--preset tiny --format bin --seed 9");
  Json a = run_script(kHfPython, st.path().string() + " --transformers");
  Json b = run_script(kHfPython, bin.path().string() + " --transformers");
  for (const Json* j : {&a, &b}) {
    ASSERT_TRUE(j->contains("missing_keys"));
    EXPECT_TRUE((*j)["missing_keys"].empty()) << (*j)["missing_keys"];
    EXPECT_TRUE((*j)["unexpected_keys"].empty()) << (*j)["unexpected_keys"];
  }
  // Bit-identical weights in both formats give identical logits.
  EXPECT_EQ(a["logits_sum"], b["logits_sum"]);
  EXPECT_GT(a["logits_sum"].get<double>(), 0.0);
}

}  // namespace
}  // namespace dsmath
