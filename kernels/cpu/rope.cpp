// RoPE, HF rotate_half layout: dimension j pairs with j + d/2 (see rope.h).
#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "common/core/error.h"

namespace dsmath::cpu {

RopeTable::RopeTable(int64_t head_dim_, double theta, double factor)
    : head_dim(head_dim_), position_scale(float(1.0 / factor)), linear_factor(float(factor)) {
  DSMATH_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even and positive, got ",
               head_dim);
  DSMATH_CHECK(theta > 0, "rope: rope_theta must be positive, got ", theta);
  DSMATH_CHECK(factor > 0, "rope: linear scaling factor must be positive, got ", factor);
  // HF: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), every
  // step in f32: the exponent is an f32 division, the power and the reciprocal are f32.
  inv_freq.resize(size_t(head_dim / 2));
  const float base = float(theta);
  for (int64_t j = 0; j < head_dim / 2; ++j) {
    const float exponent = float(2 * j) / float(head_dim);
    inv_freq[size_t(j)] = 1.0f / std::pow(base, exponent);
  }
}

namespace {

// HF (transformers 4.40, the goldens' version): position_ids.float() / scaling_factor, then
// freqs = inv_freq * position in f32, then cos/sin in f32. Dividing rather than multiplying
// by position_scale keeps the last bit equal for factors that are not powers of two.
inline float angle(const RopeTable& t, int32_t pos, int64_t j) {
  return (float(pos) / t.linear_factor) * t.inv_freq[size_t(j)];
}

void check(int64_t tokens, int64_t heads, const int32_t* positions) {
  DSMATH_CHECK(tokens >= 0 && heads >= 0, "rope: bad shape tokens=", tokens, " heads=", heads);
  for (int64_t i = 0; i < tokens; ++i)
    DSMATH_CHECK(positions[i] >= 0, "rope: negative position ", positions[i], " at token ", i);
}

}  // namespace

void apply_rope(float* x, int64_t tokens, int64_t heads, const int32_t* positions,
                const RopeTable& table) {
  check(tokens, heads, positions);
  const int64_t d = table.head_dim, half = d / 2;
  // cos/sin depend only on (token, j): computed once per token, applied to every head.
#pragma omp parallel if (tokens * heads * d >= (1 << 14))
  {
    thread_local std::vector<float> cs;  // grown and never shrunk: no allocation per call
    if (cs.size() < size_t(d)) cs.resize(size_t(d));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t j = 0; j < half; ++j) {
        const float a = angle(table, positions[t], j);
        cs[size_t(j)] = std::cos(a);
        cs[size_t(half + j)] = std::sin(a);
      }
      const float* c = cs.data();
      const float* s = cs.data() + half;
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * d;
        for (int64_t j = 0; j < half; ++j) {
          const float x1 = v[j], x2 = v[j + half];
          v[j] = x1 * c[j] - x2 * s[j];
          v[j + half] = x2 * c[j] + x1 * s[j];
        }
      }
    }
  }
}

void apply_rope_reference(float* x, int64_t tokens, int64_t heads, const int32_t* positions,
                          const RopeTable& table) {
  check(tokens, heads, positions);
  const int64_t d = table.head_dim, half = d / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * d;
      for (int64_t j = 0; j < half; ++j) {
        const float a = angle(table, positions[t], j);
        const float x1 = v[j], x2 = v[j + half];
        v[j] = x1 * std::cos(a) - x2 * std::sin(a);
        v[j + half] = x2 * std::cos(a) + x1 * std::sin(a);
      }
    }
  }
}

}  // namespace dsmath::cpu
