#include "lipsync/tensor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace lipsync {
namespace {

TEST(Tensor, ShapeSizeAndZeroFill) {
  Tensor t(DataType::kFloat32, {2, 3, 4});
  EXPECT_EQ(t.element_count(), 24);
  EXPECT_EQ(t.byte_size(), 96u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(t.data_as<float>()[i], 0.0f);
  EXPECT_EQ(ShapeToString({-1, 6, 320, 320}), "[N,6,320,320]");
  EXPECT_EQ(ShapeToString({-1, 3}, false), "[?,3]");
}

TEST(Tensor, CloneCopiesData) {
  Tensor t(DataType::kInt32, {5});
  for (int i = 0; i < 5; ++i) t.data_as<int32_t>()[i] = i * i;
  Tensor c = t.Clone();
  EXPECT_NE(c.data(), t.data());
  EXPECT_EQ(std::memcmp(c.data(), t.data(), t.byte_size()), 0);
}

TEST(Tensor, ParseDataType) {
  EXPECT_EQ(*ParseDataType("float16"), DataType::kFloat16);
  EXPECT_EQ(*ParseDataType("fp32"), DataType::kFloat32);
  EXPECT_FALSE(ParseDataType("bfloat17").ok());
}

TEST(Half, ExactValuesRoundTrip) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 0.000061035156f, 5.9604645e-08f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(v)), v) << v;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(70000.0f), 0x7c00);  // overflow to +Inf
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Half, RoundingErrorWithinHalfAnUlp) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1000.0f, 1000.0f);
  for (int i = 0; i < 100000; ++i) {
    const float v = dist(rng);
    const float r = HalfToFloat(FloatToHalf(v));
    // half has 11 significant bits: relative error at most 2^-11.
    EXPECT_LE(std::fabs(r - v), std::fabs(v) * (1.0f / 2048.0f) + 1e-7f) << v;
  }
}

}  // namespace
}  // namespace lipsync
