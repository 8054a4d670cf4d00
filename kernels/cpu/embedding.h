// Embedding lookup:  out[i, :] = table[ids[i], :]  converted to f32.
// An id outside [0, table.rows) is an Error naming the id (never an out-of-bounds read).
#pragma once

#include <cstdint>

#include "kernels/weight_view.h"

namespace dsmath::cpu {

void embedding_lookup(const WeightView& table, const int32_t* ids, int64_t n, float* out);

}  // namespace dsmath::cpu
