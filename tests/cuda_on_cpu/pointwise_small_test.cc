// The split-reduction 1x1 convolution for few pixels (backends/cuda/kernels/pointwise_small.cu),
// run on the CPU device, against the reference backend on random data: the pointwise cases of the
// GPU tests (the demo UNet's 10x10 to 40x40 layers and odd sizes), threads in both orders between
// barriers. Tolerance: close_to_reference.h (float16).
#include "backends/cuda/kernels/pointwise_small.cuh"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/reference/reference_kernels.h"
#include "close_to_reference.h"
#include "cpu_device.h"
#include "fused_group_cases.h"
#include "half_buffer.h"

namespace lipsync::cuda_on_cpu {
namespace {

using cuda::Act;
using cuda::SmallPointwise;
using graph::Plan;
using graph::PlanStep;
using test_plans::PointwiseCase;

std::vector<float> BufferOf(const Plan& plan, const std::vector<float>& arena, int id) {
  const auto& b = plan.buffers[static_cast<size_t>(id)];
  return std::vector<float>(arena.begin() + b.offset, arena.begin() + b.offset + b.size);
}

class PointwiseOnCpu : public ::testing::TestWithParam<size_t> {};

TEST_P(PointwiseOnCpu, MatchesTheReference) {
  const PointwiseCase c = test_plans::PointwiseCases()[GetParam()];
  const uint32_t seed = test_plans::FreshSeed();
  SCOPED_TRACE(c.what + ", seed " + std::to_string(seed));
  test_plans::PlanBuilder builder(seed);
  Plan plan = test_plans::BuildPointwiseSteps(c, builder);
  for (float& w : plan.weights) w = test_plans::RoundToHalf(w);
  const PlanStep& step = plan.steps[0];
  // Batch 1: the kernel sees the pixels of the batch as rows either way.
  std::vector<float> arena(static_cast<size_t>(plan.arena_floats), 0.0f);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (const int id : step.inputs) {
    const auto& b = plan.buffers[static_cast<size_t>(id)];
    for (int64_t i = 0; i < b.size; ++i)
      arena[b.offset + i] = test_plans::RoundToHalf(dist(builder.rng));
  }
  reference::RunStep(plan, step, 1, arena.data(), 1);
  std::vector<float> want = BufferOf(plan, arena, step.output);
  for (float& v : want) v = test_plans::RoundToHalf(v);

  const std::vector<float> in_values = BufferOf(plan, arena, step.inputs[0]);
  HalfBuffer in(in_values.data(), in_values.size());
  HalfBuffer weight(plan.weights.data() + step.weight_offset,
                    static_cast<size_t>(step.weight_count));
  HalfBuffer bias(plan.weights.data() + step.bias_offset, static_cast<size_t>(c.cout));
  const std::vector<float> residual_values =
      c.residual ? BufferOf(plan, arena, step.inputs[1]) : std::vector<float>();
  HalfBuffer residual(residual_values.data(), residual_values.size());

  SmallPointwise p;
  p.in = in.data();
  p.weight = weight.data();
  p.bias = bias.data();
  p.residual = c.residual ? residual.data() : nullptr;
  p.m = static_cast<int>(c.h * c.w);
  p.n = static_cast<int>(c.cout);
  p.k = static_cast<int>(c.cin);
  p.act = c.act == graph::Activation::kRelu      ? Act::kRelu
          : c.act == graph::Activation::kSigmoid ? Act::kSigmoid
                                                 : Act::kNone;
  ASSERT_TRUE(cuda::SmallPointwiseSupports(p.m, p.n, p.k));
  for (const bool reverse : {false, true}) {
    SCOPED_TRACE(reverse ? "threads last to first" : "threads first to last");
    ResetDevice({kSm90SharedPerBlock, reverse});
    HalfBuffer out(want.size());
    p.out = out.data();
    ASSERT_EQ(cuda::LaunchSmallPointwise(p, nullptr), cudaSuccess) << LastLaunchFailure();
    EXPECT_TRUE(out.GuardIntact()) << "a write past the output's end";
    test_plans::CloseToReference(out.ToFloats(), want, true, "output");
  }
}

INSTANTIATE_TEST_SUITE_P(PointwiseLayers, PointwiseOnCpu,
                         ::testing::Range<size_t>(0, test_plans::PointwiseCases().size()));

}  // namespace
}  // namespace lipsync::cuda_on_cpu
