// The byte <-> float conversions of the frame form on the CPU backends, value by value, through
// models whose output is exact (make_graph_models.py): face_identity.onnx returns the visual
// input's face channels, face_constant.onnx returns 1 - 2^-24, 1 and the smallest positive
// float. Upstream (SyncTalk_2D) divides the bytes by 255.0 in float32 and casts 255 * output to
// uint8 (truncation). The expected quotients are computed in double and rounded once, which
// gives the correctly rounded float32 quotient (53 >= 2 * 24 + 2 bits).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "graph_test_util.h"
#include "lipsync/engine.h"
#include "lipsync/face.h"

namespace lipsync {
namespace {

float UpstreamScale(int byte) { return static_cast<float>(byte / 255.0); }

uint32_t Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

std::unique_ptr<Engine> Load(const std::string& model, const std::string& backend) {
  EngineOptions options;
  options.backend = backend;
  options.intra_op_threads = 1;
  auto engine = Engine::Create(testing::GraphModel(model), options);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// A 320x320 face whose bytes run through all 256 values in each channel, and zero audio.
struct Frames {
  Tensor faces{DataType::kUInt8, {1, 320, 320, 3}};
  Tensor audio{DataType::kFloat32, {1, 32, 16, 16}};
  Frames() {
    uint8_t* f = faces.data_as<uint8_t>();
    for (int64_t i = 0; i < faces.element_count(); ++i) f[i] = static_cast<uint8_t>(i / 3 % 256);
    std::memset(audio.data(), 0, audio.byte_size());
  }
};

TEST(FaceValues, VisualValueIsTheCorrectlyRoundedQuotient) {
  int differs_from_product = 0;
  for (int b = 0; b < 256; ++b) {
    ASSERT_EQ(Bits(VisualValue(static_cast<uint8_t>(b))), Bits(UpstreamScale(b))) << "byte " << b;
    differs_from_product += Bits(b * (1.0f / 255.0f)) != Bits(UpstreamScale(b));
  }
  // What the test tells apart: scaling by the rounded reciprocal is off by one ulp this often.
  EXPECT_EQ(differs_from_product, 126);
}

// Upstream's np.array(pred * 255, dtype=np.uint8): a float32 product, truncated.
uint8_t UpstreamByte(float v) { return static_cast<uint8_t>(v * 255.0f); }

TEST(FaceValues, OutputByteAtTheBoundaries) {
  const float below_one = std::nextafter(1.0f, 0.0f);
  const float above_zero = std::nextafter(0.0f, 1.0f);
  for (float v : {1.0f, below_one, std::nextafter(below_one, 0.0f), above_zero, 0.5f, 0.0f}) {
    EXPECT_EQ(OutputByte(v), UpstreamByte(v)) << v;
  }
  // Spelled out: one ulp below 1 is 254, as upstream's cast makes it.
  EXPECT_EQ(OutputByte(below_one), 254);
  EXPECT_EQ(OutputByte(1.0f), 255);
  EXPECT_EQ(OutputByte(above_zero), 0);
  EXPECT_EQ(OutputByte(NAN), 0);
  EXPECT_EQ(OutputByte(-1.0f), 0);
  EXPECT_EQ(OutputByte(2.0f), 255);
}

class FaceValuesBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(FaceValuesBackend, BytesScaleExactlyAsUpstreamDivides) {
  auto engine = Load("face_identity.onnx", GetParam());
  ASSERT_TRUE(engine);
  const Frames in;
  Tensor out(DataType::kFloat32, {1, 3, 320, 320});
  const Status ran = engine->RunFrames({in.faces.view(), in.audio.view()}, out.mutable_view());
  ASSERT_TRUE(ran.ok()) << ran.ToString();
  const size_t plane = 320 * 320;
  const uint8_t* faces = in.faces.data_as<uint8_t>();
  const float* got = out.data_as<float>();
  for (size_t p = 0; p < plane; ++p) {
    for (int c = 0; c < 3; ++c) {
      const int byte = faces[p * 3 + c];
      ASSERT_EQ(Bits(got[c * plane + p]), Bits(UpstreamScale(byte)))
          << "byte " << byte << " at pixel " << p << " channel " << c;
    }
  }
}

TEST_P(FaceValuesBackend, BoundaryOutputsGiveUpstreamsBytes) {
  auto engine = Load("face_constant.onnx", GetParam());
  ASSERT_TRUE(engine);
  const Frames in;
  // The model really returns the boundary values.
  Tensor planes(DataType::kFloat32, {1, 3, 320, 320});
  Status ran = engine->RunFrames({in.faces.view(), in.audio.view()}, planes.mutable_view());
  ASSERT_TRUE(ran.ok()) << ran.ToString();
  const size_t plane = 320 * 320;
  ASSERT_EQ(planes.data_as<float>()[0], std::nextafter(1.0f, 0.0f));
  ASSERT_EQ(planes.data_as<float>()[plane], 1.0f);
  ASSERT_EQ(planes.data_as<float>()[2 * plane], std::nextafter(0.0f, 1.0f));

  Tensor images(DataType::kUInt8, {1, 320, 320, 3});
  ran = engine->RunFrames({in.faces.view(), in.audio.view()}, images.mutable_view());
  ASSERT_TRUE(ran.ok()) << ran.ToString();
  const uint8_t* bgr = images.data_as<uint8_t>();
  for (size_t p = 0; p < plane; ++p) {
    ASSERT_EQ(bgr[p * 3 + 0], 254) << "1 - 2^-24 at pixel " << p;
    ASSERT_EQ(bgr[p * 3 + 1], 255) << "1.0 at pixel " << p;
    ASSERT_EQ(bgr[p * 3 + 2], 0) << "2^-149 at pixel " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(CpuBackends, FaceValuesBackend, ::testing::Values("reference", "ort"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace lipsync
