// argmax and log_softmax over a row of logits (see softmax.h).
#include "kernels/cpu/softmax.h"

#include <cmath>

#include "common/core/error.h"

namespace dsmath::cpu {

int64_t argmax(const float* x, int64_t n) {
  DSMATH_CHECK(n > 0, "argmax: empty row");
  int64_t best = 0;
  for (int64_t i = 0; i < n; ++i) {
    DSMATH_CHECK(!std::isnan(x[i]), "argmax: logit ", i, " is NaN");
    if (x[i] > x[best]) best = i;
  }
  return best;
}

void log_softmax(const float* x, int64_t n, float* out) {
  const float mx = x[argmax(x, n)];
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - mx);
  const double log_z = double(mx) + std::log(sum);
  for (int64_t i = 0; i < n; ++i) out[i] = float(double(x[i]) - log_z);
}

}  // namespace dsmath::cpu
