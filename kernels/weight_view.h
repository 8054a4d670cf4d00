// A weight matrix as it lies in the checkpoint: row-major [rows, cols], HF nn.Linear layout
// ([out_features, in_features]), in its stored dtype. Kernels read bf16/f16/f32 directly,
// so bf16 weights stay bf16 in memory and arithmetic happens in f32.
#pragma once

#include <cstdint>

#include "common/core/dtype.h"

namespace dsmath {

struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::BF16;
  int64_t rows = 0;
  int64_t cols = 0;
  // Optional: the same matrix in the layout this CPU's linear() reads fastest
  // (cpu::pack_for_linear, made once at load). linear() computes the same bits either way, and
  // `data` may then be nullptr (see pack_for_linear).
  const void* packed = nullptr;
};

}  // namespace dsmath
