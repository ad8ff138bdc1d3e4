// Models as users' exporters and converters write them (make_compat_models.py): PyTorch's dynamo
// export with external data, the demo model with external data, a float16 file, and external data
// that must be refused. Every backend of this build that runs on the CPU is checked.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>

#include "graph_test_util.h"
#include "lipsync/engine.h"

namespace lipsync {
namespace {

std::string CompatModel(const std::string& file) { return testing::GraphModel("compat/" + file); }

Result<std::unique_ptr<Engine>> Load(const std::string& path, const std::string& backend) {
  EngineOptions options;
  options.backend = backend;
  options.intra_op_threads = 2;
  return Engine::Create(path, options);
}

std::vector<Tensor> RunOrDie(Engine& engine, const std::vector<Tensor>& inputs) {
  auto out = engine.Run(testing::Views(inputs));
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return out.ok() ? std::move(*out) : std::vector<Tensor>{};
}

// Largest absolute difference between two float tensors of one shape (infinity if they differ in
// shape or hold NaN).
double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  double worst = 0.0;
  for (int64_t i = 0; i < a.element_count(); ++i) {
    const double d = std::fabs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

using DynamoExportTest = testing::ElsewhereTest;

TEST_F(DynamoExportTest, ReferenceMatchesOrtAtBatchOneAndThree) {
  const std::string path = CompatModel("dynamo/model.onnx");
  auto ort = Load(path, "ort");
  auto ref = Load(path, "reference");
  ASSERT_TRUE(ort.ok()) << ort.status().ToString();
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  EXPECT_TRUE((*ort)->info().dynamic_batch);
  EXPECT_EQ((*ref)->info().inputs.size(), 2u);
  for (int64_t batch : {1, 3}) {
    auto inputs = testing::RandomInputs((*ort)->info(), batch, 40 + static_cast<uint32_t>(batch));
    auto expected = RunOrDie(**ort, inputs);
    auto actual = RunOrDie(**ref, inputs);
    ASSERT_EQ(expected.size(), 1u);
    ASSERT_EQ(actual.size(), 1u);
    // Seeded weights that saturated the sigmoid would make the comparison say little.
    const float* e = expected[0].data_as<float>();
    const int64_t n = expected[0].element_count();
    const double unsaturated =
        double(std::count_if(e, e + n, [](float v) { return v > 0.01f && v < 0.99f; })) / n;
    EXPECT_GT(unsaturated, 0.5) << "share of outputs in (0.01, 0.99)";
    const double diff = MaxAbsDiff(expected[0], actual[0]);
    std::cout << "dynamo export, batch " << batch << ": " << unsaturated * 100
              << "% of outputs in (0.01, 0.99), max abs difference reference vs ONNX Runtime "
              << diff << "\n";
    EXPECT_LE(diff, 1e-4) << "batch " << batch;
  }
}

using ExternalDemoTest = testing::ElsewhereTest;

TEST_F(ExternalDemoTest, SameOutputAsTheSingleFileModelBitForBit) {
  for (const std::string backend : {"ort", "reference"}) {
    auto single = Load(testing::DemoModel(), backend);
    auto external = Load(CompatModel("demo_external/demo.onnx"), backend);
    ASSERT_TRUE(single.ok()) << single.status().ToString();
    ASSERT_TRUE(external.ok()) << external.status().ToString();
    auto inputs = testing::RandomInputs((*single)->info(), 2, 11);
    auto a = RunOrDie(**single, inputs);
    auto b = RunOrDie(**external, inputs);
    ASSERT_EQ(a.size(), 1u);
    ASSERT_EQ(b.size(), 1u);
    ASSERT_EQ(a[0].byte_size(), b[0].byte_size());
    EXPECT_EQ(std::memcmp(a[0].data(), b[0].data(), a[0].byte_size()), 0) << backend;
  }
}

struct Refusal {
  const char* folder;
  StatusCode code;
  const char* says;
};

class RefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(RefusalTest, IsAClearStatusOnEveryBackend) {
  const Refusal& r = GetParam();
  for (const std::string backend : {"ort", "reference"}) {
    auto engine = Load(CompatModel(std::string("refuse/") + r.folder + "/model.onnx"), backend);
    ASSERT_FALSE(engine.ok()) << r.folder << " loaded on " << backend;
    EXPECT_EQ(engine.status().code(), r.code) << engine.status().ToString();
    EXPECT_NE(engine.status().message().find(r.says), std::string::npos)
        << engine.status().ToString();
    EXPECT_NE(engine.status().message().find("tensor 'w'"), std::string::npos)
        << engine.status().ToString();
  }
}

INSTANTIATE_TEST_SUITE_P(
    ExternalData, RefusalTest,
    ::testing::Values(Refusal{"absolute", StatusCode::kInvalidArgument, "absolute path"},
                      Refusal{"dotdot", StatusCode::kInvalidArgument, "climbs out"},
                      Refusal{"link", StatusCode::kInvalidArgument, "through a link"},
                      Refusal{"linked_dir", StatusCode::kInvalidArgument, "through a link"},
                      Refusal{"missing", StatusCode::kDataLoss, "nothere.bin' is missing"},
                      Refusal{"short", StatusCode::kDataLoss, "short/weights.bin' holds"},
                      Refusal{"offset_past_end", StatusCode::kDataLoss, "truncated"}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return std::string(info.param.folder); });

TEST(ExternalDataTest, TheUnbrokenCaseLoadsAndRuns) {
  for (const std::string backend : {"ort", "reference"}) {
    auto engine = Load(CompatModel("refuse/ok/model.onnx"), backend);
    ASSERT_TRUE(engine.ok()) << engine.status().ToString();
    auto inputs = testing::RandomInputs((*engine)->info(), 1, 3);
    EXPECT_EQ(RunOrDie(**engine, inputs).size(), 1u);
  }
}

}  // namespace
}  // namespace lipsync

namespace lipsync {
namespace {

// The demo model converted to float16 (weights and activations; float32 inputs and outputs
// through Cast nodes). The native backends compute in float32 on the file's float16 weights, as
// ONNX Runtime's CPU provider does (it casts around its float32 kernels), so the two agree to
// float32 rounding: 1e-4, the tolerance of every other reference-vs-ORT check. Against the
// float32 model both carry the file's own weight rounding, which must be no larger on the
// reference backend than on ONNX Runtime.
TEST(Float16ModelTest, RunsOnEveryBackendWithinFloat16Tolerance) {
  auto fp32 = Load(testing::DemoModel(), "ort");
  ASSERT_TRUE(fp32.ok()) << fp32.status().ToString();
  auto inputs = testing::RandomInputs((*fp32)->info(), 2, 21);
  auto expected = RunOrDie(**fp32, inputs);
  ASSERT_EQ(expected.size(), 1u);
  std::map<std::string, Tensor> out;
  std::map<std::string, double> rounding;
  for (const std::string backend : {"ort", "reference"}) {
    auto half = Load(CompatModel("demo_fp16.onnx"), backend);
    ASSERT_TRUE(half.ok()) << backend << ": " << half.status().ToString();
    EXPECT_EQ((*half)->info().inputs[0].dtype, DataType::kFloat32);
    auto got = RunOrDie(**half, inputs);
    ASSERT_EQ(got.size(), 1u);
    rounding[backend] = MaxAbsDiff(expected[0], got[0]);
    std::cout << "float16 demo on " << backend << ": max abs difference to the float32 model "
              << rounding[backend] << "\n";
    out[backend] = std::move(got[0]);
  }
  const double diff = MaxAbsDiff(out["ort"], out["reference"]);
  std::cout << "float16 demo, reference vs ONNX Runtime: max abs difference " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
  EXPECT_LE(rounding["reference"], rounding["ort"] * 1.01 + 1e-4);
}

}  // namespace
}  // namespace lipsync
