// Seeded uniform random inputs for kernel tests and benchmarks: n floats in [-scale, scale].
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace dsmath::testing {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

}  // namespace dsmath::testing
