// The tensor-core inverted-residual block kernel (backends/cuda/kernels/ir_block_tc.cu), run on the
// CPU device, against the reference backend's plain loops on random data: the fused groups of the
// GPU tests (the demo UNet's blocks and odd sizes that leave partial tiles), every tile the kernel
// is compiled for that fits an sm_90 block, with the resize-concat and the output convolution
// inside where the group has them. Each tile runs twice: threads first to last with a persistent
// grid of 3 blocks and the block output written, then last to first with a block per tile and,
// where there is a tail, the block output not written. Tolerance: close_to_reference.h (float16).
#include "backends/cuda/kernels/ir_block_tc.cuh"

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
using cuda::IrTcGeometry;
using cuda::IrTcTensors;
using cuda::IrTile;
using graph::Plan;
using graph::PlanStep;
using test_plans::GroupCase;

// The plan's buffers of one batch, as the reference computes them (each step's output rounded to
// float16, as the kernels store it).
struct Reference {
  Plan plan;
  int64_t batch = 0;
  std::vector<float> arena;

  std::vector<float> Buffer(int id) const {
    const auto& b = plan.buffers[static_cast<size_t>(id)];
    const auto first = arena.begin() + b.offset * batch;
    return std::vector<float>(first, first + b.size * batch);
  }
  HalfBuffer Halves(int id) const {
    const std::vector<float> values = Buffer(id);
    return HalfBuffer(values.data(), values.size());
  }
  HalfBuffer Weights(int64_t offset, int64_t count) const {
    return HalfBuffer(plan.weights.data() + offset, static_cast<size_t>(count));
  }
};

Reference RunReference(Plan plan, int64_t batch, std::mt19937& rng) {
  for (float& w : plan.weights) w = test_plans::RoundToHalf(w);
  std::vector<bool> written(plan.buffers.size(), false);
  for (const PlanStep& s : plan.steps) written[static_cast<size_t>(s.output)] = true;
  Reference r{plan, batch,
              std::vector<float>(static_cast<size_t>(plan.arena_floats * batch), 0.0f)};
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (size_t id = 0; id < plan.buffers.size(); ++id) {
    if (written[id]) continue;
    const auto& b = plan.buffers[id];
    for (int64_t i = 0; i < b.size * batch; ++i) {
      r.arena[static_cast<size_t>(b.offset * batch + i)] = test_plans::RoundToHalf(dist(rng));
    }
  }
  for (const PlanStep& s : plan.steps) {
    reference::RunStep(plan, s, batch, r.arena.data(), 1);
    const auto& out = plan.buffers[static_cast<size_t>(s.output)];
    for (int64_t i = 0; i < out.size * batch; ++i) {
      float& v = r.arena[static_cast<size_t>(out.offset * batch + i)];
      v = test_plans::RoundToHalf(v);
    }
  }
  return r;
}

Act ActOf(graph::Activation a) {
  switch (a) {
    case graph::Activation::kRelu:
      return Act::kRelu;
    case graph::Activation::kSigmoid:
      return Act::kSigmoid;
    default:
      return Act::kNone;
  }
}

class IrBlockOnCpu : public ::testing::TestWithParam<size_t> {};

TEST_P(IrBlockOnCpu, MatchesTheReference) {
  const GroupCase c = test_plans::FusedCases()[GetParam()];
  const uint32_t seed = test_plans::FreshSeed();
  SCOPED_TRACE(c.what + ", seed " + std::to_string(seed));
  test_plans::PlanBuilder builder(seed);
  const int64_t batch = 2;
  const Reference ref = RunReference(test_plans::BuildGroupSteps(c, builder), batch, builder.rng);
  const std::vector<PlanStep>& steps = ref.plan.steps;
  const bool head = c.head_c0 > 0, tail = c.tail_cout > 0;
  const PlanStep& expand = steps[head ? 1 : 0];
  const PlanStep& depthwise = steps[head ? 2 : 1];
  const PlanStep& project = steps[head ? 3 : 2];

  IrTcGeometry g;
  g.batch = static_cast<int>(batch);
  g.h = static_cast<int>(c.h);
  g.w = static_cast<int>(c.w);
  g.cin = static_cast<int>(c.cin);
  g.hidden = static_cast<int>(c.hidden);
  const auto& block_out = ref.plan.buffers[static_cast<size_t>(project.output)].shape;
  g.oh = static_cast<int>(block_out.h);
  g.ow = static_cast<int>(block_out.w);
  g.cout = static_cast<int>(c.cout);
  g.stride = static_cast<int>(c.stride);
  g.pad_top = static_cast<int>(depthwise.conv.pad_top);
  g.pad_left = static_cast<int>(depthwise.conv.pad_left);
  g.tail_cout = static_cast<int>(c.tail_cout);

  HalfBuffer in = ref.Halves(expand.inputs[0]);
  HalfBuffer part0 = head ? ref.Halves(steps[0].inputs[0]) : HalfBuffer(0);
  HalfBuffer part1 = head ? ref.Halves(steps[0].inputs[1]) : HalfBuffer(0);
  HalfBuffer we = ref.Weights(expand.weight_offset, expand.weight_count);
  HalfBuffer be = ref.Weights(expand.bias_offset, c.hidden);
  HalfBuffer wd = ref.Weights(depthwise.weight_offset, depthwise.weight_count);
  HalfBuffer bd = ref.Weights(depthwise.bias_offset, c.hidden);
  HalfBuffer wp = ref.Weights(project.weight_offset, project.weight_count);
  HalfBuffer bp = ref.Weights(project.bias_offset, c.cout);
  HalfBuffer wt =
      tail ? ref.Weights(steps.back().weight_offset, steps.back().weight_count) : HalfBuffer(0);
  HalfBuffer bt = tail ? ref.Weights(steps.back().bias_offset, c.tail_cout) : HalfBuffer(0);
  const std::vector<float> want_block = ref.Buffer(project.output);
  const std::vector<float> want_tail =
      tail ? ref.Buffer(steps.back().output) : std::vector<float>();

  IrTcTensors t;
  if (head) {
    const auto& source = ref.plan.buffers[static_cast<size_t>(steps[0].inputs[0])].shape;
    t.concat.enabled = true;
    t.concat.part0 = part0.data();
    t.concat.c0 = static_cast<int>(c.head_c0);
    t.concat.part1 = part1.data();
    t.concat.c1 = static_cast<int>(c.cin - c.head_c0);
    cuda::ResizeSpec& r = t.concat.resize;
    r.resize = true;
    r.nearest = c.nearest;
    r.src_h = static_cast<int>(source.h);
    r.src_w = static_cast<int>(source.w);
    r.resized_h = static_cast<int>(steps[0].resize.out_h);
    r.resized_w = static_cast<int>(steps[0].resize.out_w);
    r.pad_top = static_cast<int>(steps[0].resize.pad_top);
    r.pad_left = static_cast<int>(steps[0].resize.pad_left);
  } else {
    t.in = in.data();
  }
  t.expand_weight = we.data();
  t.expand_bias = be.data();
  t.dw_weight = wd.data();
  t.dw_bias = bd.data();
  t.project_weight = wp.data();
  t.project_bias = bp.data();
  t.residual = project.epilogue.residual ? in.data() : nullptr;
  t.act = ActOf(project.epilogue.activation);
  if (tail) {
    t.tail_weight = wt.data();
    t.tail_bias = bt.data();
    t.tail_act = ActOf(steps.back().epilogue.activation);
  }

  int count = 0, ran = 0;
  const IrTile* tiles = cuda::IrTilesFor(g.stride, &count);
  for (int i = 0; i < count; ++i) {
    const IrTile tile = tiles[i];
    if (!cuda::IrTcUnsupported(g, tile, kSm90SharedPerBlock).empty()) continue;
    ++ran;
    for (const bool reverse : {false, true}) {
      const std::string what = "tile " + std::to_string(tile.h) + "x" + std::to_string(tile.w) +
                               (reverse ? ", threads last to first" : ", threads first to last");
      SCOPED_TRACE(what);
      ResetDevice({kSm90SharedPerBlock, reverse});
      ASSERT_EQ(cuda::PrepareIrTcKernels(kSm90SharedPerBlock), cudaSuccess);
      HalfBuffer out(want_block.size());
      HalfBuffer tail_out(want_tail.size());
      IrTcTensors run = t;
      const bool write_block = !tail || !reverse;
      run.out = write_block ? out.data() : nullptr;
      run.tail_out = tail ? tail_out.data() : nullptr;
      ASSERT_EQ(cuda::LaunchIrTc(g, run, tile, reverse ? 1 << 20 : 3, nullptr), cudaSuccess)
          << LastLaunchFailure();
      ASSERT_EQ(cudaGetLastError(), cudaSuccess) << LastLaunchFailure();
      EXPECT_TRUE(out.GuardIntact() && tail_out.GuardIntact()) << "a write past an output's end";
      if (write_block) test_plans::CloseToReference(out.ToFloats(), want_block, true, "block");
      if (tail) test_plans::CloseToReference(tail_out.ToFloats(), want_tail, true, "tail");
    }
  }
  EXPECT_GT(ran, 0) << "no tile of the kernel takes this block";
}

INSTANTIATE_TEST_SUITE_P(FusedGroups, IrBlockOnCpu,
                         ::testing::Range<size_t>(0, test_plans::FusedCases().size()));

}  // namespace
}  // namespace lipsync::cuda_on_cpu
