// Host-side decisions of the CUDA backend, checked without a GPU (label unit): which blocks of the
// demo model's plan the fused inverted-residual kernels may take and with which variants, which
// steps run on a second stream, and what the audio encoder's plan needs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "backends/cuda/autotune.h"
#include "backends/cuda/fused_groups.h"
#include "backends/cuda/step_runner.h"
#include "demo_model.h"
#include "fused_cases.h"
#include "graph/buffer_plan.h"
#include "graph/compiler.h"
#include "graph/side_branch.h"
#include "lipsync/tensor.h"

namespace lipsync {
namespace {

using test_plans::DemoModel;

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

// Limits of an RTX 4090 (sm_89: 99 KiB of shared memory per block) and an H100/H200 (227 KiB).
cuda::DeviceLimits Limits(size_t shared) {
  cuda::DeviceLimits limits;
  limits.shared_per_block = shared;
  limits.multiprocessors = 128;
  return limits;
}
constexpr size_t kSm89Shared = 101376;
constexpr size_t kSm90Shared = 232448;

// The demo plan as the backend plans it for fused kernels.
graph::Plan FusionPlan() {
  auto plan = graph::CompilePlanFromFile(DemoModel());
  EXPECT_TRUE(plan.ok()) << plan.status().ToString();
  if (!plan.ok()) return {};
  const Status planned = cuda::PlanForFusion(&*plan);
  EXPECT_TRUE(planned.ok()) << planned.ToString();
  return std::move(plan).value();
}

std::map<std::string, cuda::FusedGroup> GroupsByModule(const graph::Plan& plan,
                                                       cuda::Storage storage, size_t shared) {
  std::map<std::string, cuda::FusedGroup> by_module;
  for (const auto& g : cuda::FindFusedGroups(plan, storage, Limits(shared))) {
    if (g.kind == cuda::FusedGroup::Kind::kBlock) by_module[g.name.substr(0, g.name.find(' '))] = g;
  }
  return by_module;
}

// The float16 block groups of the demo UNet: the blocks whose shapes the tensor-core kernel takes
// (at most 64 input, 128 expanded, 64 output channels), the two upsampling blocks with their
// resize-concat and the last block with the output convolution, on both GPU generations.
TEST(CudaPlan, TensorCoreGroupsOfTheDemoModel) {
  const graph::Plan fusion = FusionPlan();
  const graph::Plan* plan = &fusion;
  ASSERT_FALSE(plan->steps.empty());
  for (const size_t shared : {kSm89Shared, kSm90Shared}) {
    SCOPED_TRACE("shared memory per block " + std::to_string(shared));
    const auto groups = GroupsByModule(*plan, cuda::Storage::kFloat16, shared);
    for (const char* module :
         {"inc.inconv.0", "down1.maxpool_conv.0.double_conv.0",
          "down1.maxpool_conv.0.double_conv.1", "down2.maxpool_conv.0.double_conv.0",
          "down2.maxpool_conv.0.double_conv.1", "audio_model.conv1", "up3.conv.double_conv.1",
          "up4.conv.double_conv.0", "up4.conv.double_conv.1", "up5.conv.double_conv.0",
          "up5.conv.double_conv.1"}) {
      EXPECT_TRUE(groups.count(module)) << module;
    }
    // Blocks with 128 outputs or 256 expanded channels stay with the unfused steps.
    EXPECT_FALSE(groups.count("down3.maxpool_conv.0.double_conv.0"));
    EXPECT_FALSE(groups.count("up3.conv.double_conv.0"));
    EXPECT_FALSE(groups.count("audio_model.conv2"));
    ASSERT_TRUE(groups.count("up5.conv.double_conv.0") && groups.count("up5.conv.double_conv.1"));
    const auto& up5 = groups.at("up5.conv.double_conv.0");
    EXPECT_TRUE(up5.head);
    EXPECT_FALSE(up5.tail);
    EXPECT_EQ(plan->steps[up5.first].kind, graph::StepKind::kResizeConcat);
    EXPECT_EQ(up5.count, 4u);
    EXPECT_TRUE(groups.at("up4.conv.double_conv.0").head);
    const auto& last = groups.at("up5.conv.double_conv.1");
    EXPECT_FALSE(last.head);
    EXPECT_TRUE(last.tail);
    EXPECT_EQ(last.first + last.count, plan->steps.size()) << "the output convolution is inside";
    EXPECT_FALSE(groups.at("inc.inconv.0").head || groups.at("inc.inconv.0").tail);
    // Groups do not overlap; each is a block at `expand`, or one 1x1 convolution of at most
    // 40x40 pixels: every such convolution outside the blocks (the UNet's deep layers).
    size_t next = 0, pointwise = 0;
    for (const auto& g : cuda::FindFusedGroups(*plan, cuda::Storage::kFloat16, Limits(shared))) {
      EXPECT_GE(g.first, next) << g.name;
      next = g.first + g.count;
      EXPECT_EQ(plan->steps[g.expand].conv.kind, graph::ConvKind::kPointwise) << g.name;
      if (g.kind == cuda::FusedGroup::Kind::kPointwise) {
        ++pointwise;
        EXPECT_EQ(g.count, 1u) << g.name;
        const auto& out = plan->buffers[plan->steps[g.first].output].shape;
        EXPECT_LE(out.h * out.w, 40 * 40) << g.name;
        continue;
      }
      EXPECT_EQ(plan->steps[g.expand + 1].conv.kind, graph::ConvKind::kDepthwise) << g.name;
      EXPECT_EQ(g.expand, g.first + (g.head ? 1 : 0)) << g.name;
    }
    size_t small = 0;  // 1x1 convolutions at 40x40 or less, outside the block groups above
    for (size_t s = 0; s < plan->steps.size(); ++s) {
      const auto& st = plan->steps[s];
      if (st.kind != graph::StepKind::kConv || st.conv.kind != graph::ConvKind::kPointwise)
        continue;
      const auto& out = plan->buffers[st.output].shape;
      bool in_block = false;
      for (const auto& [module, g] : groups) {
        in_block |=
            g.kind == cuda::FusedGroup::Kind::kBlock && s >= g.first && s < g.first + g.count;
      }
      small += !in_block && out.h * out.w <= 40 * 40;
    }
    EXPECT_EQ(pointwise, small);
    EXPECT_GE(pointwise, 30u) << "the 10x10, 16x16, 20x20 and 40x40 layers";
  }
}

// Each group's variants: the unfused steps first; the tensor-core tiles that fit the GPU's shared
// memory, with the head and tail inside and, as a fallback, without; the CUDA-core kernel where
// the expanded tensor is at most 64 channels.
TEST(CudaPlan, VariantsFollowTheGpusSharedMemory) {
  const graph::Plan fusion = FusionPlan();
  const graph::Plan* plan = &fusion;
  ASSERT_FALSE(plan->steps.empty());
  const auto names = [&](const std::string& module, size_t shared) {
    const auto groups = GroupsByModule(*plan, cuda::Storage::kFloat16, shared);
    std::vector<std::string> out;
    if (!groups.count(module)) return out;
    for (const auto& v :
         cuda::GroupVariants(*plan, groups.at(module), cuda::Storage::kFloat16, Limits(shared))) {
      out.push_back(v.Name());
    }
    return out;
  };
  const auto up5_89 = names("up5.conv.double_conv.0", kSm89Shared);
  const std::vector<std::string> want_89 = {"unfused", "tensor-core 8x16 +resize-concat",
                                            "tensor-core 8x16", "tensor-core 8x8 +resize-concat",
                                            "tensor-core 8x8"};
  EXPECT_EQ(up5_89, want_89);
  const auto up5_90 = names("up5.conv.double_conv.0", kSm90Shared);
  EXPECT_EQ(up5_90.size(), want_89.size() + 2) << "the 16x16 tile fits an sm_90 block";
  EXPECT_NE(std::find(up5_90.begin(), up5_90.end(), "tensor-core 16x16 +resize-concat"),
            up5_90.end());
  const auto last = names("up5.conv.double_conv.1", kSm89Shared);
  EXPECT_NE(std::find(last.begin(), last.end(), "tensor-core 8x16 +last conv"), last.end());
  EXPECT_EQ(last.back(), "cuda-core") << "32 expanded channels fit the CUDA-core kernel";
  // Float32: no tensor-core kernel; the CUDA-core one where it fits.
  for (const auto& g : cuda::FindFusedGroups(*plan, cuda::Storage::kFloat32, Limits(kSm89Shared))) {
    const auto variants =
        cuda::GroupVariants(*plan, g, cuda::Storage::kFloat32, Limits(kSm89Shared));
    ASSERT_EQ(variants.size(), 2u) << g.name;
    EXPECT_EQ(variants[1].kind, cuda::VariantKind::kCudaCore) << g.name;
    EXPECT_LE(plan->steps[g.expand + 1].conv.cin, 64) << g.name;
  }
}

// The cases the GPU kernel tests run (tests/gpu/fused_cases.h) are each one fused group with a
// tensor-core variant that runs all of it on an RTX 4090 and an H100 (float16), and a CUDA-core
// variant where the expanded tensor is at most 64 channels (float32).
TEST(CudaPlan, TheKernelTestCasesAreFusedGroups) {
  for (const auto& c : testing_gpu::FusedCases()) {
    SCOPED_TRACE(c.what);
    testing_gpu::PlanBuilder b(1);
    const graph::Plan plan = testing_gpu::BuildGroup(c, b);
    for (const size_t shared : {kSm89Shared, kSm90Shared}) {
      const auto groups = cuda::FindFusedGroups(plan, cuda::Storage::kFloat16, Limits(shared));
      ASSERT_EQ(groups.size(), 1u);
      EXPECT_EQ(groups[0].first, 0u);
      EXPECT_EQ(groups[0].count, plan.steps.size());
      EXPECT_EQ(groups[0].head, c.head_c0 > 0);
      EXPECT_EQ(groups[0].tail, c.tail_cout > 0);
      bool whole = false;
      for (const auto& v :
           cuda::GroupVariants(plan, groups[0], cuda::Storage::kFloat16, Limits(shared))) {
        whole |= v.kind == cuda::VariantKind::kTensorCore && v.fuse_head == groups[0].head &&
                 v.fuse_tail == groups[0].tail;
      }
      EXPECT_TRUE(whole);
    }
    const auto f32 = cuda::FindFusedGroups(plan, cuda::Storage::kFloat32, Limits(kSm89Shared));
    EXPECT_EQ(f32.size(), c.hidden <= 64 ? 1u : 0u);
  }
  for (const auto& c : testing_gpu::PointwiseCases()) {
    SCOPED_TRACE(c.what);
    testing_gpu::PlanBuilder b(1);
    const graph::Plan plan = testing_gpu::BuildPointwise(c, b);
    const auto groups = cuda::FindFusedGroups(plan, cuda::Storage::kFloat16, Limits(kSm89Shared));
    ASSERT_EQ(groups.size(), 1u);
    EXPECT_EQ(groups[0].kind, cuda::FusedGroup::Kind::kPointwise);
    const auto variants =
        cuda::GroupVariants(plan, groups[0], cuda::Storage::kFloat16, Limits(kSm89Shared));
    ASSERT_EQ(variants.size(), 2u);
    EXPECT_EQ(variants[1].kind, cuda::VariantKind::kSmallPointwise);
    EXPECT_TRUE(cuda::FindFusedGroups(plan, cuda::Storage::kFloat32, Limits(kSm89Shared)).empty());
  }
}

// Kernel launches of a forward pass: a group counts one for a fused kernel that holds its head
// and tail, one more for each left outside, and its steps when unfused.
TEST(CudaPlan, KernelCountsFollowTheChosenVariants) {
  cuda::FusedGroup g;
  g.first = 10;
  g.count = 5;
  g.expand = 11;
  g.head = g.tail = true;
  cuda::GroupVariant unfused, whole, block_only;
  whole.kind = block_only.kind = cuda::VariantKind::kTensorCore;
  whole.fuse_head = whole.fuse_tail = true;
  EXPECT_EQ(unfused.Kernels(g), 5);
  EXPECT_EQ(whole.Kernels(g), 1);
  EXPECT_EQ(block_only.Kernels(g), 3);
  cuda::KernelSchedule schedule;
  schedule.batches = {1, 32};
  cuda::TunedGroup tuned;
  tuned.group = g;
  tuned.variants = {{unfused, "ok", {}}, {whole, "ok", {}}};
  tuned.chosen = {0, 1};
  schedule.groups.push_back(tuned);
  const KernelReport report = cuda::MakeKernelReport(schedule, 20);
  ASSERT_EQ(report.kernels_per_forward.size(), 2u);
  EXPECT_EQ(report.kernels_per_forward[0], (std::pair<int64_t, int>{1, 25}));
  EXPECT_EQ(report.kernels_per_forward[1], (std::pair<int64_t, int>{32, 21}));
  // A run at batch n follows the nearer tuning batch on a log scale.
  EXPECT_EQ(schedule.BatchClass(1), 0u);
  EXPECT_EQ(schedule.BatchClass(5), 0u);
  EXPECT_EQ(schedule.BatchClass(6), 1u);
  EXPECT_EQ(schedule.BatchClass(64), 1u);
}

// The load-time check that decides whether a fused kernel may run: float16 results within a few
// half ulps plus 0.5% of the output's RMS pass, a wrong index, a stray value or an unwritten
// element do not.
TEST(CudaPlan, TheSelfCheckRejectsWrongResults) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> want(4096);
  for (float& v : want) v = HalfToFloat(FloatToHalf(dist(rng)));
  for (const cuda::Storage storage : {cuda::Storage::kFloat16, cuda::Storage::kFloat32}) {
    SCOPED_TRACE(cuda::StorageName(storage));
    const bool half = storage == cuda::Storage::kFloat16;
    EXPECT_EQ(cuda::OutputMismatch(want, want, storage), "");
    // Rounding-level differences: one ulp of float16 (or 1e-6 relative in float32) everywhere.
    std::vector<float> close = want;
    for (float& v : close) v += half ? std::ldexp(std::fabs(v), -10) : 1e-6f * v;
    EXPECT_EQ(cuda::OutputMismatch(close, want, storage), "");
    // Neighbouring elements swapped (an index off by one).
    std::vector<float> shifted = want;
    std::swap(shifted[100], shifted[101]);
    EXPECT_NE(cuda::OutputMismatch(shifted, want, storage), "");
    // One element off by 2% of the RMS.
    std::vector<float> stray = want;
    stray[7] += 0.03f;
    EXPECT_NE(cuda::OutputMismatch(stray, want, storage), "");
    // One element never written (the poison is NaN).
    std::vector<float> unwritten = want;
    unwritten[4095] = std::nanf("");
    const std::string why = cuda::OutputMismatch(unwritten, want, storage);
    EXPECT_NE(why.find("element 4095"), std::string::npos) << why;
  }
}

// The audio branch runs on a second stream: exactly the steps that read the audio input alone,
// joining at the concatenation with the visual encoder; its buffers move to a region of the arena
// that no other buffer uses, so the two streams never share memory.
TEST(CudaPlan, TheAudioBranchRunsApart) {
  graph::Plan plan = FusionPlan();  // as the backend plans it: fusion first
  ASSERT_FALSE(plan.steps.empty());
  const int64_t arena_before = plan.arena_floats;
  const graph::SideBranch side = graph::SplitSideBranch(&plan);
  ASSERT_TRUE(side.usable()) << side.description;
  EXPECT_NE(side.description.find("audio_input"), std::string::npos) << side.description;
  ASSERT_EQ(side.on_side.size(), plan.steps.size());
  EXPECT_EQ(plan.steps[side.join].kind, graph::StepKind::kConcat);
  std::vector<bool> side_buffer(plan.buffers.size(), false);
  for (const auto& in : plan.inputs) {
    if (in.name == "audio_input") side_buffer[in.buffer] = true;
  }
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const auto& step = plan.steps[s];
    const bool audio = step.name.rfind("/audio_model/", 0) == 0;
    EXPECT_EQ(side.on_side[s], audio) << s << " " << step.name;
    if (side.on_side[s]) {
      EXPECT_LT(s, side.join);
      side_buffer[step.output] = true;
    }
  }
  EXPECT_TRUE(graph::CheckBufferPlan(plan).ok());
  EXPECT_GT(plan.arena_floats, arena_before);
  for (size_t a = 0; a < plan.buffers.size(); ++a) {
    if (!side_buffer[a]) continue;
    EXPECT_GE(plan.buffers[a].offset, arena_before) << plan.buffers[a].name;
    for (size_t b = 0; b < plan.buffers.size(); ++b) {
      if (side_buffer[b]) continue;
      const auto& x = plan.buffers[a];
      const auto& y = plan.buffers[b];
      EXPECT_FALSE(x.offset < y.offset + y.size && y.offset < x.offset + x.size)
          << x.name << " and " << y.name << " share memory across the streams";
    }
  }
  // A model with one input has no second stream.
  graph::Plan one = plan;
  one.inputs.resize(1);
  EXPECT_FALSE(graph::SplitSideBranch(&one).usable());
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
