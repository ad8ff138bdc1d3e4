// Host-side decisions of the CUDA backend, checked without a GPU (label unit): which blocks of the
// demo model's plan the fused inverted-residual kernel takes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backends/cuda/step_runner.h"
#include "graph/compiler.h"

namespace lipsync {
namespace {

std::string DemoModel() {
  const char* env = std::getenv("DEMO_MODEL");
  return env ? env : LIPSYNC_DEMO_MODEL;
}

TEST(CudaPlan, FusedBlocksAreExpandDepthwiseProjectChainsOfTheDemoModel) {
  auto plan = graph::CompilePlanFromFile(DemoModel());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  for (const cuda::Storage storage : {cuda::Storage::kFloat32, cuda::Storage::kFloat16}) {
    const std::vector<bool> starts = cuda::FusedBlockStarts(*plan, storage);
    ASSERT_EQ(starts.size(), plan->steps.size());
    int fused = 0;
    for (size_t i = 0; i < starts.size(); ++i) {
      if (!starts[i]) continue;
      ++fused;
      ASSERT_LT(i + 2, plan->steps.size());
      const auto& e = plan->steps[i];
      const auto& d = plan->steps[i + 1];
      const auto& p = plan->steps[i + 2];
      EXPECT_EQ(e.conv.kind, graph::ConvKind::kPointwise) << i;
      EXPECT_EQ(d.conv.kind, graph::ConvKind::kDepthwise) << i;
      EXPECT_EQ(p.conv.kind, graph::ConvKind::kPointwise) << i;
      EXPECT_EQ(d.inputs[0], e.output) << i;
      EXPECT_EQ(p.inputs[0], d.output) << i;
      EXPECT_LE(d.conv.cin, 64) << i;  // only blocks whose expanded tensor is narrow
      // No block starts inside another.
      EXPECT_FALSE(starts[i + 1]) << i;
      EXPECT_FALSE(starts[i + 2]) << i;
    }
    // The demo model has inverted-residual blocks at 320, 160, 80 and 16 pixels with 6 to 32
    // input channels; at least the 320x320 first block must be taken.
    EXPECT_GE(fused, 4) << cuda::StorageName(storage);
    EXPECT_TRUE(starts[0]) << "the first block (6 channels expanded to 12, at 320x320)";
  }
}

// The audio encoder beside the UNet: its plan (Conv, Relu, Add, a final Flatten to [N,512])
// passes the CUDA backend's load-time check, so on a GPU it runs there, not on the CPU.
TEST(CudaPlan, TheDemoAudioEncoderIsSupported) {
  const std::string demo = DemoModel();
  const std::string encoder = demo.substr(0, demo.rfind('/') + 1) + "demo_audio_encoder.onnx";
  auto plan = graph::CompilePlanFromFile(encoder);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->outputs.size(), 1u);
  EXPECT_EQ(plan->outputs[0].nchw, (std::vector<int64_t>{-1, 512}));
  const Status supported = cuda::CheckPlanSupported(*plan, 64);
  EXPECT_TRUE(supported.ok()) << supported.ToString();
}

}  // namespace
}  // namespace lipsync
