// Exporter forms on the CUDA backend: PyTorch 2.11's dynamo export with external data and the demo
// model with external data, each against ONNX Runtime on the CPU (float32, max abs difference
// 1e-4, as every backend-vs-ORT check), loaded from a working directory other than the model's.
// COMPAT_MODELS_DIR overrides the folder that make_compat_models.py wrote.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "graph_test_util.h"
#include "lipsync/engine.h"

namespace lipsync {
namespace {

std::string CompatModel(const std::string& file) {
  const char* env = std::getenv("COMPAT_MODELS_DIR");
  return std::string(env ? env : LIPSYNC_COMPAT_MODELS_DIR) + "/" + file;
}

double MaxDifferenceToOrt(const std::string& path, int64_t batch) {
  EngineOptions cpu;
  cpu.intra_op_threads = 4;
  EngineOptions gpu;
  gpu.backend = "cuda";
  auto ort = Engine::Create(path, cpu);
  auto cuda = Engine::Create(path, gpu);
  EXPECT_TRUE(ort.ok()) << ort.status().ToString();
  EXPECT_TRUE(cuda.ok()) << cuda.status().ToString();
  if (!ort.ok() || !cuda.ok()) return INFINITY;
  auto inputs = testing::RandomInputs((*ort)->info(), batch, 17 + static_cast<uint32_t>(batch));
  auto expected = (*ort)->Run(testing::Views(inputs));
  auto actual = (*cuda)->Run(testing::Views(inputs));
  EXPECT_TRUE(expected.ok()) << expected.status().ToString();
  EXPECT_TRUE(actual.ok()) << actual.status().ToString();
  if (!expected.ok() || !actual.ok()) return INFINITY;
  double worst = 0.0;
  const Tensor& a = (*expected)[0];
  const Tensor& b = (*actual)[0];
  for (int64_t i = 0; i < a.element_count(); ++i) {
    const double d = std::fabs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]);
    if (!(d <= worst)) worst = std::isnan(d) ? INFINITY : d;
  }
  return worst;
}

class CudaCompatTest : public testing::ElsewhereTest,
                       public ::testing::WithParamInterface<std::string> {};

TEST_P(CudaCompatTest, MatchesOrtAtBatchOneAndThree) {
  for (int64_t batch : {1, 3}) {
    const double diff = MaxDifferenceToOrt(CompatModel(GetParam()), batch);
    std::printf("%s batch %lld: max abs difference CUDA vs ONNX Runtime CPU %g\n",
                GetParam().c_str(), static_cast<long long>(batch), diff);
    EXPECT_LE(diff, 1e-4) << GetParam() << " batch " << batch;
  }
}

INSTANTIATE_TEST_SUITE_P(Exports, CudaCompatTest,
                         ::testing::Values("dynamo/model.onnx", "demo_external/demo.onnx"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param.substr(0, info.param.find('/'));
                         });

}  // namespace
}  // namespace lipsync
