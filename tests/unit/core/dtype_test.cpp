#include "common/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace dsmath {
namespace {

TEST(DType, Bf16RoundTripsExactValues) {
  for (float f : {0.0f, 1.0f, -2.5f, 0.15625f, 65536.0f}) EXPECT_EQ(bf16_to_f32(f32_to_bf16(f)), f);
}

TEST(DType, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even one (1.0).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
}

TEST(DType, F16MatchesIeeeHalf) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);                   // overflow -> inf
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  for (int h = 0; h < 0x7c00; h += 7) {
    EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
  }
}

}  // namespace
}  // namespace dsmath
