// RunAvatarFaces, the avatar services' way through the UNet: the same bytes as the CPU's
// FillVisualInput + Run + OutputToImage one face at a time, however the faces are cut into runs.
#include "server/core/avatar_faces.h"

#include <gtest/gtest.h>

#include <random>

#include "lipsync/face.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using testing::kTestData;

constexpr int64_t kFaces = 7;

std::unique_ptr<LoadedAvatar> WithUnet(const std::string& model, int64_t max_batch) {
  auto a = std::make_unique<LoadedAvatar>();
  EngineOptions options;
  options.intra_op_threads = 1;
  options.max_batch = max_batch;
  auto unet = Engine::Create(kTestData + "/" + model, options);
  EXPECT_TRUE(unet.ok()) << unet.status().ToString();
  if (!unet.ok()) return nullptr;
  a->unet = std::move(*unet);
  a->roles = FindUnetInputs(a->unet->info()).value();
  a->layout = FaceLayout::ForInputSize(a->roles.size).value();
  ScheduleAvatar(*a, std::make_shared<runtime::Scheduler>(runtime::SchedulerOptions{}));
  return a;
}

TEST(AvatarFaces, AnyCutIntoRunsGivesTheFacesOfOneAtATime) {
  auto dynamic = WithUnet("tiny.onnx", 64);
  ASSERT_TRUE(dynamic);
  const FaceLayout& layout = dynamic->layout;
  const int s = layout.inner_size, c = layout.crop_size;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor crops(DataType::kUInt8, {kFaces, c, c, 3});
  Tensor faces(DataType::kUInt8, {kFaces, s, s, 3});  // the crops' centres
  Tensor audio(DataType::kFloat32, {kFaces, 32, 16, 16});
  for (int64_t i = 0; i < crops.element_count(); ++i) {
    crops.data_as<uint8_t>()[i] = static_cast<uint8_t>(byte(rng));
  }
  for (int64_t i = 0; i < audio.element_count(); ++i) audio.data_as<float>()[i] = normal(rng);
  const size_t crop_bytes = static_cast<size_t>(c) * c * 3,
               face_bytes = static_cast<size_t>(s) * s * 3;
  for (int64_t k = 0; k < kFaces; ++k) {
    for (int y = 0; y < s; ++y) {
      std::memcpy(faces.data_as<uint8_t>() + k * face_bytes + static_cast<size_t>(y) * s * 3,
                  crops.data_as<uint8_t>() + k * crop_bytes +
                      static_cast<size_t>(y + layout.inner_offset) * c * 3 +
                      layout.inner_offset * 3,
                  static_cast<size_t>(s) * 3);
    }
  }
  // The slow, obvious way: one face at a time through Engine::Run.
  std::vector<uint8_t> expected(kFaces * face_bytes);
  for (int64_t k = 0; k < kFaces; ++k) {
    Tensor visual(DataType::kFloat32, {1, 6, s, s});
    FillVisualInput(faces.data_as<uint8_t>() + k * face_bytes, layout, visual.data_as<float>());
    std::vector<TensorView> inputs(2);
    inputs[dynamic->roles.visual] = visual.view();
    inputs[dynamic->roles.audio] = {
        DataType::kFloat32, {1, 32, 16, 16}, audio.data_as<float>() + k * 32 * 16 * 16};
    auto out = dynamic->unet->Run(inputs);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    OutputToImage((*out)[0].data_as<float>(), s, expected.data() + k * face_bytes);
  }
  // The same weights with a fixed batch of 3 (the last run padded), and runs of at most 3.
  auto fixed = WithUnet("tiny_fixed3.onnx", 64);
  auto capped = WithUnet("tiny.onnx", 3);
  ASSERT_TRUE(fixed && capped);
  for (LoadedAvatar* a : {dynamic.get(), fixed.get(), capped.get()}) {
    for (const Tensor* in : {&faces, &crops}) {
      std::vector<uint8_t> got(kFaces * face_bytes, 0);
      Status ran = RunAvatarFaces(*a, in->view(), audio.view(), got.data());
      ASSERT_TRUE(ran.ok()) << ran.ToString();
      EXPECT_EQ(got, expected) << a->unet->info().path << (in == &crops ? " crops" : " faces");
    }
  }
}

}  // namespace
}  // namespace lipsync::server
