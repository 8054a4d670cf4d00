// Helpers for sampling over one row of logits (f32):
//   argmax:      the first index of the largest value (torch.argmax's choice on ties)
//   log_softmax: out[i] = x[i] - max(x) - log(sum_j e^(x[j] - max(x))), sum in f64
// NaN logits are an Error: a corrupted forward must not silently pick token 0.
#pragma once

#include <cstdint>

namespace dsmath::cpu {

int64_t argmax(const float* x, int64_t n);

void log_softmax(const float* x, int64_t n, float* out);

}  // namespace dsmath::cpu
