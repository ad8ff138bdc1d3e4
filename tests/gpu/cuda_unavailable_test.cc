// On a machine without a GPU or driver (CI, the development machines) the CUDA backend must
// refuse cleanly with Unavailable and a message that says why, through both its factory and
// the Engine. On a machine with a GPU these checks do not apply and are skipped with a note.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backends/cuda/cuda_backend.h"
#include "demo_model.h"
#include "lipsync/engine.h"

namespace lipsync {
namespace {

bool MachineHasGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::string AnyModelPath() { return test_plans::DemoModel(); }

TEST(CudaUnavailable, DeviceCheckSaysNoDevice) {
  if (MachineHasGpu()) GTEST_SKIP() << "this machine has a GPU; the check is for machines without";
  const Status status = cuda::CheckCudaDevice(0);
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  EXPECT_EQ(status.message().rfind("no CUDA device: ", 0), 0u) << status.message();
  EXPECT_GT(status.message().size(), std::string("no CUDA device: ").size()) << "no reason given";
}

TEST(CudaUnavailable, FactoryReturnsUnavailableForEveryOption) {
  if (MachineHasGpu()) GTEST_SKIP() << "this machine has a GPU; the check is for machines without";
  for (const Precision precision : {Precision::kFloat32, Precision::kFloat16}) {
    for (const bool graph : {false, true}) {
      EngineOptions options;
      options.backend = "cuda";
      options.precision = precision;
      options.cuda.cuda_graph = graph;
      // The model file need not exist: the device check comes first, and must not crash either.
      auto loaded = CreateCudaBackend("/nonexistent/model.onnx", options);
      ASSERT_FALSE(loaded.ok());
      EXPECT_EQ(loaded.status().code(), StatusCode::kUnavailable) << loaded.status().ToString();
      EXPECT_NE(loaded.status().message().find("no CUDA device"), std::string::npos)
          << loaded.status().message();
    }
  }
}

TEST(CudaUnavailable, EngineCreateReportsUnavailable) {
  if (MachineHasGpu()) GTEST_SKIP() << "this machine has a GPU; the check is for machines without";
  const std::string model = AnyModelPath();
  FILE* f = std::fopen(model.c_str(), "rb");
  ASSERT_NE(f, nullptr) << "model " << model << " missing (the make_demo_model fixture makes it)";
  std::fclose(f);
  EngineOptions options;
  options.backend = "cuda";
  auto engine = Engine::Create(model, options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), StatusCode::kUnavailable) << engine.status().ToString();
  EXPECT_NE(engine.status().message().find("no CUDA device"), std::string::npos);
}

TEST(CudaUnavailable, BackendIsRegistered) {
  const auto names = AvailableBackends();
  EXPECT_NE(std::find(names.begin(), names.end(), "cuda"), names.end());
}

}  // namespace
}  // namespace lipsync
