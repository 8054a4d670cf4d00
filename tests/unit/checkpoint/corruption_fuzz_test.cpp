// Random corruptions of good files: every read either fails with dsmath::Error or returns
// tensors lying wholly inside the mapping. Run under ASan/UBSan to also catch stray reads
// during parsing.
#include <gtest/gtest.h>

#include <random>

#include "common/checkpoint/safetensors.h"
#include "common/checkpoint/safetensors_writer.h"
#include "common/checkpoint/torch_bin.h"
#include "common/checkpoint/torch_bin_writer.h"
#include "test_util.h"

namespace dsmath {
namespace {

using test::TempDir;

const std::vector<TensorSpec> kSpecs = {
    {"embed", DType::BF16, {6, 4}}, {"norm", DType::F32, {4}}, {"proj", DType::F16, {3, 2, 2}}};

void fill(size_t index, int64_t first, int64_t count, std::byte* out) {
  std::memset(out, int(index + 1), size_t(count) * dtype_size(kSpecs[index].dtype));
}

template <typename Reader>
void fuzz(const std::filesystem::path& good_path, Reader read, uint32_t seed) {
  const std::string good = test::read_file(good_path);
  const auto bad_path = good_path.parent_path() / ("fuzzed" + good_path.extension().string());
  std::mt19937 rng(seed);
  int ok = 0, errors = 0;
  for (int iter = 0; iter < 800; ++iter) {
    std::string bytes = good;
    switch (rng() % 3) {
      case 0:  // truncate
        bytes.resize(rng() % bytes.size());
        break;
      case 1:  // flip 1..4 random bytes
        for (uint32_t k = 0, n = 1 + rng() % 4; k < n; ++k)
          bytes[rng() % bytes.size()] = char(rng());
        break;
      default:  // set a random byte of the first 256 (headers, pickle) to an extreme value
        bytes[rng() % std::min<size_t>(256, bytes.size())] = char(rng() % 2 ? 0xff : 0x7f);
        break;
    }
    test::write_file(bad_path, bytes);
    if (bytes.empty()) continue;  // an empty file cannot be mapped; MappedFile's own error
    MappedFile f(bad_path);
    try {
      for (const TensorInfo& t : read(f)) {
        ASSERT_GE(t.data, f.bytes().data());
        ASSERT_LE(t.nbytes, size_t(f.bytes().data() + f.size() - t.data)) << t.name;
        ASSERT_EQ(t.nbytes, size_t(t.numel()) * dtype_size(t.dtype)) << t.name;
      }
      ++ok;
    } catch (const Error&) {
      ++errors;
    }
  }
  // Both outcomes occur: flips inside tensor data are harmless, header damage is caught.
  EXPECT_GT(ok, 0);
  EXPECT_GT(errors, 0);
}

TEST(CorruptionFuzz, Safetensors) {
  TempDir dir;
  write_safetensors(dir / "good.safetensors", kSpecs, fill);
  fuzz(
      dir / "good.safetensors", [](const MappedFile& f) { return read_safetensors(f); }, 1);
}

TEST(CorruptionFuzz, TorchBin) {
  TempDir dir;
  write_torch_bin(dir / "good.bin", kSpecs, fill);
  fuzz(
      dir / "good.bin", [](const MappedFile& f) { return read_torch_bin(f); }, 2);
  write_torch_bin(dir / "good64.bin", kSpecs, fill, /*force_zip64=*/true);
  fuzz(
      dir / "good64.bin", [](const MappedFile& f) { return read_torch_bin(f); }, 3);
}

}  // namespace
}  // namespace dsmath
