// Rotary position embedding in HF's rotate_half layout: dimension i pairs with i + d/2.
//   inv_freq[j] = 1 / theta^(2j/d),  angle = (pos / linear_factor) * inv_freq[j]
//   x'[j]       = x[j] * cos(angle) - x[j + d/2] * sin(angle)
//   x'[j + d/2] = x[j + d/2] * cos(angle) + x[j] * sin(angle)        for j < d/2
// (NOT the interleaved (2j, 2j+1) layout of the original Meta code.)
#pragma once

#include <cstdint>
#include <vector>

namespace dsmath::cpu {

struct RopeTable {
  RopeTable(int64_t head_dim, double theta, double linear_factor = 1.0);
  int64_t head_dim;
  float position_scale;         // 1 / linear_factor
  std::vector<float> inv_freq;  // head_dim / 2 entries, computed in f32 as HF does
  float linear_factor = 1.0f;   // positions are divided by it in f32, as HF does
};

// x: [tokens, heads, head_dim], rotated in place; positions: one per token.
void apply_rope(float* x, int64_t tokens, int64_t heads, const int32_t* positions,
                const RopeTable& table);

void apply_rope_reference(float* x, int64_t tokens, int64_t heads, const int32_t* positions,
                          const RopeTable& table);

}  // namespace dsmath::cpu
