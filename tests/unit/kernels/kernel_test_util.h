// Helpers the CPU kernel tests share: the instruction sets this CPU has, and tensors stored in
// each weight dtype.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "common/core/dtype.h"
#include "kernels/cpu/simd.h"

namespace dsmath::cpu::test {

// The instruction sets this CPU has: each kernel's path for each is tested against the others.
inline std::vector<detail::Isa> isas() {
  std::vector<detail::Isa> out{detail::Isa::Portable};
  if (detail::hardware_isa() >= detail::Isa::Avx2) out.push_back(detail::Isa::Avx2);
  if (detail::hardware_isa() >= detail::Isa::Avx512) out.push_back(detail::Isa::Avx512);
  return out;
}

// A tensor stored in `t` (bytes) built from f32 values.
inline std::vector<unsigned char> store(const std::vector<float>& v, DType t) {
  std::vector<unsigned char> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t h = t == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

inline constexpr DType kDTypes[] = {DType::F32, DType::F16, DType::BF16};

}  // namespace dsmath::cpu::test
