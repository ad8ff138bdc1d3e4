// The reference backend (compiled plan, plain CPU loops) against ONNX Runtime on the same models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <thread>

#include "graph_test_util.h"
#include "lipsync/audio.h"
#include "lipsync/engine.h"

namespace lipsync {
namespace {

using testing::GraphModel;

struct Engines {
  std::unique_ptr<Engine> ort;
  std::unique_ptr<Engine> ref;
};

Engines Load(const std::string& path) {
  EngineOptions ort_options;
  ort_options.backend = "ort";
  ort_options.intra_op_threads = 2;
  EngineOptions ref_options;
  ref_options.backend = "reference";
  ref_options.intra_op_threads = 2;
  auto ort = Engine::Create(path, ort_options);
  auto ref = Engine::Create(path, ref_options);
  EXPECT_TRUE(ort.ok()) << ort.status().ToString();
  EXPECT_TRUE(ref.ok()) << ref.status().ToString();
  if (!ort.ok() || !ref.ok()) return {};
  return {std::move(*ort), std::move(*ref)};
}

// Runs both engines on the same random input and returns the largest absolute difference.
double MaxDifference(Engines& e, int64_t batch, uint32_t seed) {
  auto inputs = testing::RandomInputs(e.ort->info(), batch, seed);
  auto expected = e.ort->Run(testing::Views(inputs));
  auto actual = e.ref->Run(testing::Views(inputs));
  EXPECT_TRUE(expected.ok()) << expected.status().ToString();
  EXPECT_TRUE(actual.ok()) << actual.status().ToString();
  if (!expected.ok() || !actual.ok()) return INFINITY;
  EXPECT_EQ(expected->size(), actual->size());
  double worst = 0.0;
  for (size_t o = 0; o < expected->size() && o < actual->size(); ++o) {
    const Tensor& a = (*expected)[o];
    const Tensor& b = (*actual)[o];
    EXPECT_EQ(a.shape(), b.shape());
    if (a.shape() != b.shape()) return INFINITY;
    for (int64_t i = 0; i < a.element_count(); ++i) {
      const double d = std::fabs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]);
      if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
    }
  }
  return worst;
}

class SmallModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SmallModelTest, MatchesOrtAtBatchOneAndThree) {
  Engines e = Load(GraphModel(GetParam()));
  ASSERT_TRUE(e.ort && e.ref);
  EXPECT_EQ(e.ref->info().backend, "reference");
  EXPECT_EQ(e.ref->info().provider, "cpu");
  ASSERT_EQ(e.ref->info().inputs.size(), e.ort->info().inputs.size());
  for (size_t i = 0; i < e.ort->info().inputs.size(); ++i) {
    EXPECT_EQ(e.ref->info().inputs[i].name, e.ort->info().inputs[i].name);
    EXPECT_EQ(e.ref->info().inputs[i].shape, e.ort->info().inputs[i].shape);
  }
  ASSERT_EQ(e.ref->info().outputs.size(), e.ort->info().outputs.size());
  for (size_t i = 0; i < e.ort->info().outputs.size(); ++i) {
    EXPECT_EQ(e.ref->info().outputs[i].name, e.ort->info().outputs[i].name);
    EXPECT_EQ(e.ref->info().outputs[i].shape, e.ort->info().outputs[i].shape);
  }
  EXPECT_EQ(e.ref->info().opset, e.ort->info().opset);
  const bool dynamic = e.ort->info().dynamic_batch;
  for (int64_t batch : {int64_t{1}, int64_t{3}}) {
    const int64_t n = dynamic ? batch : e.ort->info().inputs[0].shape[0];
    const double diff = MaxDifference(e, n, 7 + static_cast<uint32_t>(batch));
    EXPECT_LE(diff, 1e-4) << "batch " << n;
    std::cout << GetParam() << " batch " << n << ": max abs difference " << diff << "\n";
    if (!dynamic) break;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, SmallModelTest,
    ::testing::Values("conv_kxk.onnx", "conv_bn.onnx", "depthwise.onnx", "up_pad_concat.onnx",
                      "up_concat.onnx", "up_nearest.onnx", "audio_hubert.onnx", "audio_wenet.onnx",
                      "two_inputs.onnx", "standalone_ops.onnx", "two_outputs.onnx",
                      "upsample_opset9.onnx", "passthrough.onnx", "up_half_pixel.onnx",
                      "bilinear_by_1_5.onnx", "bilinear_opset9.onnx"),
    [](const ::testing::TestParamInfo<std::string>& info) {
      return info.param.substr(0, info.param.find('.'));
    });

// Run() from several threads at once: every caller gets its own, correct result.
TEST(ReferenceBackendTest, ConcurrentRunsDoNotMix) {
  Engines e = Load(GraphModel("two_inputs.onnx"));
  ASSERT_TRUE(e.ort && e.ref);
  constexpr int kThreads = 4;
  std::vector<std::vector<Tensor>> inputs;
  std::vector<Tensor> expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(testing::RandomInputs(e.ort->info(), 1 + t % 2, 100 + t));
    auto out = e.ort->Run(testing::Views(inputs.back()));
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    expected.push_back(std::move((*out)[0]));
  }
  std::vector<double> worst(kThreads, INFINITY);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      double w = 0.0;
      for (int repeat = 0; repeat < 5; ++repeat) {
        auto out = e.ref->Run(testing::Views(inputs[t]));
        if (!out.ok()) return;
        const Tensor& got = (*out)[0];
        for (int64_t i = 0; i < got.element_count(); ++i) {
          w = std::max<double>(
              w, std::fabs(got.data_as<float>()[i] - expected[t].data_as<float>()[i]));
        }
      }
      worst[t] = w;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_LE(worst[t], 1e-4) << "thread " << t;
}

// An output declared without a shape that ONNX Runtime cannot infer: it reads as a scalar, so
// the ONNX Runtime engine refuses the model at load, naming the output, instead of failing every
// run; the compiled plan knows the shape and runs it.
TEST(ReferenceBackendTest, OutputsWithoutShapesAreRefusedByOnnxRuntimeOnly) {
  EngineOptions options;
  options.intra_op_threads = 1;
  auto ort = Engine::Create(GraphModel("shapeless_output.onnx"), options);
  ASSERT_FALSE(ort.ok());
  EXPECT_EQ(ort.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ort.status().message().find("output 'y' declares no shape"), std::string::npos)
      << ort.status().message();
  options.backend = "reference";
  auto ref = Engine::Create(GraphModel("shapeless_output.onnx"), options);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  EXPECT_EQ((*ref)->info().outputs.at(0).shape, (Shape{-1, 6, 4, 5}));
  Tensor x(DataType::kFloat32, {2, 3, 4, 5});
  for (int64_t i = 0; i < x.element_count(); ++i) x.data_as<float>()[i] = float(i % 7) - 3.0f;
  auto y = (*ref)->Run({x.view()});
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  const int64_t item = 3 * 4 * 5;  // y[n] = [relu(x[n]), x[n]] along the channels
  for (int64_t i = 0; i < x.element_count(); ++i) {
    const int64_t n = i / item, j = i % item;
    const float v = x.data_as<float>()[i];
    ASSERT_EQ((*y)[0].data_as<float>()[n * 2 * item + j], std::max(0.0f, v)) << i;
    ASSERT_EQ((*y)[0].data_as<float>()[n * 2 * item + item + j], v) << i;
  }
}

TEST(DemoModelTest, MatchesOrtAtBatchOneAndThree) {
  Engines e = Load(testing::DemoModel());
  ASSERT_TRUE(e.ort && e.ref);
  // DEMO_MODEL may name a fixed-batch export; then its own batch is used for both runs.
  const int64_t fixed = e.ort->info().dynamic_batch ? 0 : e.ort->info().inputs[0].shape[0];
  const double one = MaxDifference(e, fixed ? fixed : 1, 1);
  const double three = MaxDifference(e, fixed ? fixed : 3, 2);
  std::cout << "demo model, max abs difference to ONNX Runtime: batch " << (fixed ? fixed : 1)
            << " " << one << ", batch " << (fixed ? fixed : 3) << " " << three << "\n";
  EXPECT_LE(one, 1e-4);
  EXPECT_LE(three, 1e-4);
}

// The demo audio encoder (Conv, Relu, Add and a final Flatten to [N,512]) compiles for the
// native backends and matches ONNX Runtime.
TEST(DemoModelTest, AudioEncoderMatchesOrt) {
  const std::string demo = testing::DemoModel();
  const std::string encoder = demo.substr(0, demo.rfind('/') + 1) + "demo_audio_encoder.onnx";
  Engines e = Load(encoder);
  ASSERT_TRUE(e.ort && e.ref);
  ASSERT_EQ(e.ref->info().outputs.size(), 1u);
  EXPECT_EQ(e.ref->info().outputs[0].shape, (Shape{-1, 512}));
  const double one = MaxDifference(e, 1, 3);
  const double five = MaxDifference(e, 5, 4);
  std::cout << "demo audio encoder, max abs difference to ONNX Runtime: batch 1 " << one
            << ", batch 5 " << five << "\n";
  EXPECT_LE(one, 1e-4);
  EXPECT_LE(five, 1e-4);
  // So the audio module runs it where it is asked to, with no fallback to ONNX Runtime.
  EngineOptions native;
  native.backend = "reference";
  native.intra_op_threads = 1;
  auto audio = AudioEncoder::Create(encoder, native);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ((*audio)->engine().info().backend, "reference");
  EXPECT_EQ((*audio)->fallback_reason(), "");
}

}  // namespace
}  // namespace lipsync
