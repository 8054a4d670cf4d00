// Helpers for the checkpoint tests: a scratch directory, file editing, and an assertion that
// a call throws dsmath::Error whose message contains every expected fragment.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include "common/checkpoint/checkpoint.h"
#include "common/checkpoint/tensor_writer.h"
#include "common/core/dtype.h"
#include "common/core/error.h"

namespace dsmath::test {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dsmath-ckpt-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Runs `fn`, requires a dsmath::Error, and requires each fragment in its message.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> fragments) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nlacks: " << f;
    return;
  }
  ADD_FAILURE() << "no dsmath::Error thrown";
}

// Three tensors, one per dtype; element i of each is i/4 - 1 (exact in all three dtypes).
struct SampleTensors {
  std::vector<TensorSpec> specs = {{"a.bf16", DType::BF16, {3, 4}},
                                   {"b.f16", DType::F16, {5}},
                                   {"c.f32", DType::F32, {2, 2, 2}}};
  std::vector<std::vector<std::byte>> bufs;

  SampleTensors() {
    for (const TensorSpec& s : specs) {
      std::vector<std::byte> b(s.nbytes());
      for (int64_t i = 0; i < s.numel(); ++i) {
        float v = float(i) / 4 - 1;
        if (s.dtype == DType::F32) {
          std::memcpy(b.data() + 4 * i, &v, 4);
        } else {
          uint16_t h = s.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
          std::memcpy(b.data() + 2 * i, &h, 2);
        }
      }
      bufs.push_back(std::move(b));
    }
  }
  TensorFiller filler() const { return fill_from_buffers(bufs, specs); }
};

inline void expect_sample_values(const TensorInfo& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    ASSERT_EQ(load_as_f32(t.data, t.dtype, size_t(i)), float(i) / 4 - 1)
        << t.name << "[" << i << "]";
}

}  // namespace dsmath::test
