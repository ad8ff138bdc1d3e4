// The frame form (Engine::RunFrames) on the CPU backends against the CPU pre/post path it
// replaces: FillVisualInput + Run + OutputToImage. Bytes must match exactly, floats within 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "graph_test_util.h"
#include "lipsync/engine.h"
#include "lipsync/face.h"

namespace lipsync {
namespace {

constexpr double kFloatTolerance = 1e-5;

std::unique_ptr<Engine> Load(const std::string& model, const std::string& backend) {
  EngineOptions options;
  options.backend = backend;
  options.intra_op_threads = 2;
  options.max_batch = 8;
  auto engine = Engine::Create(testing::GraphModel(model), options);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  return engine.ok() ? std::move(*engine) : nullptr;
}

Tensor RandomFaces(int64_t n, int size, uint32_t seed) {
  std::mt19937 rng(seed);
  Tensor faces(DataType::kUInt8, {n, size, size, 3});
  for (int64_t i = 0; i < faces.element_count(); ++i) {
    faces.data_as<uint8_t>()[i] = static_cast<uint8_t>(rng() & 0xff);
  }
  return faces;
}

Tensor RandomAudio(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Tensor audio(DataType::kFloat32, {n, 32, 16, 16});
  for (int64_t i = 0; i < audio.element_count(); ++i) audio.data_as<float>()[i] = u(rng);
  return audio;
}

// The path RunFrames replaces: inner faces -> FillVisualInput -> Run; float output.
Tensor SlowPath(Engine& engine, const Tensor& inner, const Tensor& audio) {
  const FrameFormInfo& form = engine.frame_form();
  const int64_t n = inner.shape()[0];
  const int s = form.layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  Tensor visual(DataType::kFloat32, {n, 6, s, s});
  for (int64_t f = 0; f < n; ++f) {
    FillVisualInput(inner.data_as<uint8_t>() + f * 3 * plane, form.layout,
                    visual.data_as<float>() + f * 6 * plane);
  }
  std::vector<TensorView> inputs(2);
  inputs[form.visual_index] = visual.view();
  inputs[form.audio_index] = audio.view();
  auto out = engine.Run(inputs);
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? std::move((*out)[0]) : Tensor();
}

Tensor ToImages(const Tensor& planes) {
  const int64_t n = planes.shape()[0];
  const int s = static_cast<int>(planes.shape()[2]);
  const size_t plane = static_cast<size_t>(s) * s;
  Tensor images(DataType::kUInt8, {n, s, s, 3});
  for (int64_t f = 0; f < n; ++f) {
    OutputToImage(planes.data_as<float>() + f * 3 * plane, s,
                  images.data_as<uint8_t>() + f * 3 * plane);
  }
  return images;
}

double MaxAbsDifference(const Tensor& a, const Tensor& b) {
  double worst = 0.0;
  for (int64_t i = 0; i < a.element_count(); ++i) {
    const double d = std::fabs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

struct Case {
  std::string model;
  std::string backend;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " on " << c.backend; }

class FrameFormTest : public ::testing::TestWithParam<Case> {};

TEST_P(FrameFormTest, MatchesTheCpuPreAndPostProcessing) {
  auto engine = Load(GetParam().model, GetParam().backend);
  ASSERT_TRUE(engine);
  const FrameFormInfo& form = engine->frame_form();
  ASSERT_TRUE(form.supported) << form.why_not;
  const int s = form.layout.inner_size;
  for (int64_t n : {1, 3}) {
    const Tensor faces = RandomFaces(n, s, 11 + static_cast<uint32_t>(n));
    const Tensor audio = RandomAudio(n, 5);
    const Tensor expected = SlowPath(*engine, faces, audio);
    const Tensor expected_images = ToImages(expected);

    Tensor images(DataType::kUInt8, {n, s, s, 3});
    Status ran = engine->RunFrames({faces.view(), audio.view()}, images.mutable_view());
    ASSERT_TRUE(ran.ok()) << ran.ToString();
    EXPECT_EQ(std::memcmp(images.data(), expected_images.data(), images.byte_size()), 0)
        << "uint8 output differs from OutputToImage at batch " << n;

    Tensor planes(DataType::kFloat32, {n, 3, s, s});
    ran = engine->RunFrames({faces.view(), audio.view()}, planes.mutable_view());
    ASSERT_TRUE(ran.ok()) << ran.ToString();
    EXPECT_LE(MaxAbsDifference(planes, expected), kFloatTolerance) << "batch " << n;

    // The outputs span the byte range, so the truncation and clamping are exercised.
    int low = 0, high = 0;
    for (int64_t i = 0; i < images.element_count(); ++i) {
      low += images.data_as<uint8_t>()[i] < 32;
      high += images.data_as<uint8_t>()[i] > 223;
    }
    EXPECT_GT(low, 0);
    EXPECT_GT(high, 0);
  }
}

TEST_P(FrameFormTest, CropCentreEqualsInnerFace) {
  auto engine = Load(GetParam().model, GetParam().backend);
  ASSERT_TRUE(engine);
  const FaceLayout& layout = engine->frame_form().layout;
  const int s = layout.inner_size, c = layout.crop_size;
  const int64_t n = 2;
  const Tensor crops = RandomFaces(n, c, 3);
  Tensor inner(DataType::kUInt8, {n, s, s, 3});
  for (int64_t f = 0; f < n; ++f) {
    Image crop{c, c, {}};
    const uint8_t* src = crops.data_as<uint8_t>() + f * c * c * 3;
    crop.bgr.assign(src, src + static_cast<size_t>(c) * c * 3);
    auto face = PrepareFace(crop, layout);
    ASSERT_TRUE(face.ok()) << face.status().ToString();
    std::memcpy(inner.data_as<uint8_t>() + f * s * s * 3, face->bgr.data(), face->bgr.size());
  }
  const Tensor audio = RandomAudio(n, 9);
  Tensor from_crops(DataType::kUInt8, {n, s, s, 3}), from_inner(DataType::kUInt8, {n, s, s, 3});
  ASSERT_TRUE(engine->RunFrames({crops.view(), audio.view()}, from_crops.mutable_view()).ok());
  ASSERT_TRUE(engine->RunFrames({inner.view(), audio.view()}, from_inner.mutable_view()).ok());
  EXPECT_EQ(std::memcmp(from_crops.data(), from_inner.data(), from_crops.byte_size()), 0);
  const Tensor expected = ToImages(SlowPath(*engine, inner, audio));
  EXPECT_EQ(std::memcmp(from_crops.data(), expected.data(), expected.byte_size()), 0);
}

INSTANTIATE_TEST_SUITE_P(
    CpuBackends, FrameFormTest,
    ::testing::Values(Case{"frames320.onnx", "ort"}, Case{"frames320.onnx", "reference"},
                      Case{"frames160.onnx", "ort"}, Case{"frames160.onnx", "reference"}),
    [](const auto& info) {
      std::string name = info.param.model.substr(0, info.param.model.find('.'));
      return name + "_" + info.param.backend;
    });

TEST(FrameFormErrors, BadFacesAudioAndOutputsAreNamed) {
  auto engine = Load("frames160.onnx", "reference");
  ASSERT_TRUE(engine);
  const Tensor faces = RandomFaces(2, 160, 1);
  const Tensor audio = RandomAudio(2, 1);
  Tensor images(DataType::kUInt8, {2, 160, 160, 3});
  auto expect_error = [&](const FaceBatch& batch, const MutableTensorView& out,
                          const std::string& names) {
    const Status s = engine->RunFrames(batch, out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find(names), std::string::npos) << s.message();
  };
  const Tensor wrong_size = RandomFaces(2, 150, 1);
  expect_error({wrong_size.view(), audio.view()}, images.mutable_view(), "faces: expected uint8");
  TensorView float_faces = faces.view();
  float_faces.dtype = DataType::kFloat32;
  float_faces.shape = {2, 160, 160, 3};
  expect_error({float_faces, audio.view()}, images.mutable_view(), "faces");
  const Tensor audio3 = RandomAudio(3, 1);
  expect_error({faces.view(), audio3.view()}, images.mutable_view(), "audio input 'audio_input'");
  Tensor wrong_out(DataType::kFloat32, {2, 160, 160, 3});
  expect_error({faces.view(), audio.view()}, wrong_out.mutable_view(), "frame output");
  TensorView device_faces = faces.view();
  device_faces.memory = MemoryType::kDevice;
  expect_error({device_faces, audio.view()}, images.mutable_view(), "faces is in device memory");
  MutableTensorView device_out = images.mutable_view();
  device_out.memory = MemoryType::kDevice;
  expect_error({faces.view(), audio.view()}, device_out, "frame output is in device memory");

  auto plain = Load("conv_kxk.onnx", "ort");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->frame_form().supported);
  const Status s = plain->RunFrames({faces.view(), audio.view()}, images.mutable_view());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("does not take faces"), std::string::npos) << s.message();
}

TEST(FrameFormErrors, NonFiniteAudioIsRejectedWhenChecked) {
  EngineOptions options;
  options.backend = "ort";
  options.intra_op_threads = 1;
  options.check_finite = true;
  auto engine = Engine::Create(testing::GraphModel("frames160.onnx"), options);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const Tensor faces = RandomFaces(1, 160, 1);
  Tensor audio = RandomAudio(1, 1);
  audio.data_as<float>()[7] = NAN;
  Tensor images(DataType::kUInt8, {1, 160, 160, 3});
  const Status s = (*engine)->RunFrames({faces.view(), audio.view()}, images.mutable_view());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("element 7 is NaN"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace lipsync
