// The fused groups' kernels against the reference backend's plain CPU loops, on random data: every
// variant the backend may choose (tensor-core tiles with and without the resize-concat and the
// output convolution inside, the CUDA-core kernel, the unfused steps) for the shapes of the demo
// UNet's blocks and for odd sizes that leave partial tiles. The reference rounds each step's
// output to the storage type, as the kernels store their intermediates; float16 must be within 4
// half ulps of each value plus 0.5% of the output's RMS, and 0.2% in relative L2; float32 within
// 1e-4 relative. Output buffers start as NaN, so an element left unwritten fails.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backends/cuda/fused_groups.h"
#include "backends/reference/reference_kernels.h"
#include "close_to_reference.h"
#include "fused_cases.h"
#include "gpu_test_util.h"

namespace lipsync {
namespace {

using namespace testing_gpu;  // NOLINT: the shared helpers of these tests

// Runs every variant of the plan's one group and compares each with the reference.
void CheckVariants(Plan plan, PlanBuilder& b, Storage storage, int64_t batch, bool head, bool tail);

void CheckGroup(const GroupCase& c, Storage storage, int64_t batch) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE(c.what + ", " + cuda::StorageName(storage) + ", batch " + std::to_string(batch) +
               ", seed " + std::to_string(seed));
  PlanBuilder b(seed);
  CheckVariants(BuildGroup(c, b), b, storage, batch, c.head_c0 > 0, c.tail_cout > 0);
}

void CheckVariants(Plan plan, PlanBuilder& b, Storage storage, int64_t batch, bool head,
                   bool tail) {
  const bool half = storage == Storage::kFloat16;
  if (half) {
    for (float& w : plan.weights) w = RoundToHalf(w);
  }
  auto limits = cuda::QueryDeviceLimits(0);
  ASSERT_TRUE(limits.ok()) << limits.status().ToString();
  const Status prepared = cuda::PrepareFusedKernels(*limits);
  ASSERT_TRUE(prepared.ok()) << prepared.ToString();
  const auto groups = cuda::FindFusedGroups(plan, storage, *limits);
  ASSERT_EQ(groups.size(), 1u) << "the case's steps are not one fused group";
  const cuda::FusedGroup& group = groups[0];
  ASSERT_EQ(group.first, 0u);
  ASSERT_EQ(group.count, plan.steps.size());
  EXPECT_EQ(group.head, head);
  EXPECT_EQ(group.tail, tail);
  const auto variants = cuda::GroupVariants(plan, group, storage, *limits);
  bool tensor_core = false, whole = false;
  for (const auto& v : variants) {
    tensor_core |=
        v.kind == cuda::VariantKind::kTensorCore || v.kind == cuda::VariantKind::kSmallPointwise;
    whole |= v.kind == cuda::VariantKind::kSmallPointwise ||
             (v.kind == cuda::VariantKind::kTensorCore && v.fuse_head == group.head &&
              v.fuse_tail == group.tail);
  }
  if (half) {
    EXPECT_TRUE(tensor_core && whole) << "no tensor-core variant runs the whole group";
  }

  // Inputs random, everything else NaN; the reference rounds each step's output as stored.
  std::vector<float> arena(static_cast<size_t>(plan.arena_floats * batch),
                           std::numeric_limits<float>::quiet_NaN());
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<int> inputs;
  for (size_t id = 0; id < plan.buffers.size(); ++id) {
    if (plan.buffers[id].first_step >= 0) continue;  // written by a step
    inputs.push_back(static_cast<int>(id));
    const auto& buf = plan.buffers[id];
    for (int64_t i = 0; i < buf.size * batch; ++i) {
      const float v = dist(b.rng);
      arena[buf.offset * batch + i] = half ? RoundToHalf(v) : v;
    }
  }
  std::vector<float> expected = arena;
  for (const auto& step : plan.steps) {
    reference::RunStep(plan, step, batch, expected.data(), 0);
    if (!half) continue;
    const auto& out = plan.buffers[step.output];
    for (int64_t i = 0; i < out.size * batch; ++i) {
      float& v = expected[out.offset * batch + i];
      v = RoundToHalf(v);
    }
  }
  const auto& out = plan.buffers[plan.steps.back().output];
  const std::vector<float> want(expected.begin() + out.offset * batch,
                                expected.begin() + (out.offset + out.size) * batch);

  const size_t element = cuda::StorageSize(storage);
  DeviceBuffer device_arena(arena.size() * element);
  DeviceBuffer device_weights(plan.weights.size() * element);
  ASSERT_NE(device_arena.ptr, nullptr);
  ASSERT_NE(device_weights.ptr, nullptr);
  Upload(plan.weights, storage, device_weights.ptr);
  const cuda::DeviceTensors tensors{storage, device_arena.ptr, device_weights.ptr};
  for (const auto& v : variants) {
    Upload(arena, storage, device_arena.ptr);
    const Status launched = cuda::EnqueueGroup(plan, group, v, batch, tensors, nullptr);
    ASSERT_TRUE(launched.ok()) << v.Name() << ": " << launched.ToString();
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<float> got(arena.size());
    Download(device_arena.ptr, storage, got);
    const std::vector<float> result(got.begin() + out.offset * batch,
                                    got.begin() + (out.offset + out.size) * batch);
    test_plans::CloseToReference(result, want, storage == Storage::kFloat16, v.Name());
    for (int id : inputs) {  // the inputs are left as they were
      const auto& buf = plan.buffers[id];
      for (int64_t i = 0; i < buf.size * batch; ++i) {
        const float a = got[buf.offset * batch + i], e = arena[buf.offset * batch + i];
        ASSERT_EQ(a, e) << v.Name() << " changed input buffer " << id << " at " << i;
      }
    }
  }
}

// The split-reduction kernel for 1x1 convolutions with few pixels, at batch 1 and 3.
TEST(CudaFusedGroups, SmallPointwiseMatchesTheReference) {
  for (const PointwiseCase& c : PointwiseCases()) {
    for (const int64_t batch : {1, 3}) {
      ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
      const uint32_t seed = FreshSeed();
      SCOPED_TRACE(c.what + ", batch " + std::to_string(batch) + ", seed " + std::to_string(seed));
      PlanBuilder b(seed);
      CheckVariants(BuildPointwise(c, b), b, Storage::kFloat16, batch, false, false);
    }
  }
}

TEST(CudaFusedGroups, EveryVariantMatchesTheReference) {
  for (const GroupCase& c : FusedCases()) {
    for (const Storage storage : {Storage::kFloat16, Storage::kFloat32}) {
      if (storage == Storage::kFloat32 && c.hidden > 64) continue;  // no float32 fused kernel
      for (const int64_t batch : {1, 3}) CheckGroup(c, storage, batch);
    }
  }
}

}  // namespace
}  // namespace lipsync
