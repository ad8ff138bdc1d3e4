// The audio module beside a GPU UNet: asked for the CUDA backend, it runs the audio encoder there
// with no fallback to the CPU (cuda_model_test.cc checks the encoder's values on the GPU).
// DEMO_MODEL overrides the demo model's path; the encoder sits beside it.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "demo_model.h"
#include "lipsync/audio.h"
#include "lipsync/engine.h"

namespace lipsync {
namespace {

TEST(CudaAudioModule, RunsTheEncoderOnTheCudaBackend) {
  int count = 0;
  ASSERT_TRUE(cudaGetDeviceCount(&count) == cudaSuccess && count > 0)
      << "these tests need a CUDA GPU";
  const std::string model = test_plans::DemoModel();
  const std::string encoder =
      model.substr(0, model.find_last_of('/') + 1) + "demo_audio_encoder.onnx";
  EngineOptions options;
  options.backend = "cuda";
  options.max_batch = 64;
  auto audio = AudioEncoder::Create(encoder, options);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ((*audio)->engine().info().backend, "cuda");
  EXPECT_EQ((*audio)->fallback_reason(), "");
}

}  // namespace
}  // namespace lipsync
