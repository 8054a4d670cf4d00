// out[i, :] = table[ids[i], :] in f32, with every id checked first (see embedding.h).
#include "kernels/cpu/embedding.h"

#include <cstring>

#include "common/core/error.h"

namespace dsmath::cpu {

void embedding_lookup(const WeightView& table, const int32_t* ids, int64_t n, float* out) {
  DSMATH_CHECK(table.data != nullptr, "embedding_lookup: table has no data");
  // Validate all ids before writing anything, so a bad request leaves out untouched.
  for (int64_t i = 0; i < n; ++i)
    DSMATH_CHECK(ids[i] >= 0 && ids[i] < table.rows, "token id ", ids[i], " (position ", i,
                 ") is outside the embedding table of ", table.rows, " rows");
  const int64_t dim = table.cols;
  const size_t esize = dtype_size(table.dtype);
  const auto* base = static_cast<const unsigned char*>(table.data);
#pragma omp parallel for schedule(static) if (n * dim >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const unsigned char* row = base + size_t(ids[i]) * size_t(dim) * esize;
    float* o = out + i * dim;
    if (table.dtype == DType::F32) {
      std::memcpy(o, row, size_t(dim) * 4);
    } else {
      for (int64_t j = 0; j < dim; ++j) o[j] = load_as_f32(row, table.dtype, size_t(j));
    }
  }
}

}  // namespace dsmath::cpu
