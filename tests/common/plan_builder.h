// One-step and few-step plans built in memory for the kernel tests, with random weights scaled
// like a trained layer's: shared by the GPU tests and the tests that run CUDA kernels on the CPU.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "graph/plan.h"
#include "lipsync/tensor.h"

namespace lipsync {
namespace test_plans {

using graph::Activation;
using graph::ConvKind;
using graph::ItemShape;
using graph::Plan;
using graph::PlanStep;
using graph::StepKind;

inline uint32_t FreshSeed() {
  static std::random_device device;
  return device();
}

inline int64_t RoundUp(int64_t v) {
  return (v + graph::kPlanAlignFloats - 1) / graph::kPlanAlignFloats * graph::kPlanAlignFloats;
}

inline float RoundToHalf(float v) { return HalfToFloat(FloatToHalf(v)); }

// A plan under construction: buffers side by side in the arena (no reuse).
struct PlanBuilder {
  Plan plan;
  std::mt19937 rng;

  explicit PlanBuilder(uint32_t seed) : rng(seed) {}

  int Buffer(ItemShape shape) {
    graph::PlanBuffer b;
    b.name = "buffer" + std::to_string(plan.buffers.size());
    b.shape = shape;
    b.size = shape.elements();
    b.offset = plan.arena_floats;
    plan.arena_floats += RoundUp(b.size);
    plan.buffers.push_back(b);
    return static_cast<int>(plan.buffers.size()) - 1;
  }

  int64_t Weights(int64_t count, float scale) {
    const int64_t offset = RoundUp(static_cast<int64_t>(plan.weights.size()));
    plan.weights.resize(static_cast<size_t>(offset + count));
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (int64_t i = 0; i < count; ++i) plan.weights[offset + i] = dist(rng);
    return offset;
  }

  // Adds a conv step reading `in`; the output shape follows from the geometry.
  void Conv(ConvKind kind, ItemShape in, int64_t cout, int64_t k_h, int64_t k_w, int64_t s_h,
            int64_t s_w, int64_t pad_h, int64_t pad_w, int64_t groups, bool residual,
            Activation act) {
    ConvOn(Buffer(in), kind, cout, k_h, k_w, s_h, s_w, pad_h, pad_w, groups, residual, act);
  }

  // A conv step reading buffer `input` (so steps can be chained); returns its output buffer.
  int ConvOn(int input, ConvKind kind, int64_t cout, int64_t k_h, int64_t k_w, int64_t s_h,
             int64_t s_w, int64_t pad_h, int64_t pad_w, int64_t groups, bool residual,
             Activation act) {
    const ItemShape in = plan.buffers[input].shape;
    PlanStep step;
    step.kind = StepKind::kConv;
    step.name = "conv";
    auto& c = step.conv;
    c.kind = kind;
    c.cin = in.c;
    c.cout = cout;
    c.kh = k_h;
    c.kw = k_w;
    c.stride_h = s_h;
    c.stride_w = s_w;
    c.pad_top = c.pad_bottom = pad_h;
    c.pad_left = c.pad_right = pad_w;
    c.groups = groups;
    const ItemShape out{(in.h + 2 * pad_h - k_h) / s_h + 1, (in.w + 2 * pad_w - k_w) / s_w + 1,
                        cout};
    step.inputs.push_back(input);
    const int64_t fan_in = kind == ConvKind::kDepthwise ? k_h * k_w : k_h * k_w * in.c / groups;
    const int64_t count = kind == ConvKind::kDepthwise ? k_h * k_w * cout : cout * fan_in;
    // Weights scaled like a trained layer's so outputs stay O(1) at any fan-in.
    step.weight_offset = Weights(count, 1.7f / std::sqrt(static_cast<float>(fan_in)));
    step.weight_count = count;
    step.bias_offset = Weights(cout, 0.5f);
    if (residual) step.inputs.push_back(Buffer(out));
    step.output = Buffer(out);
    step.epilogue.residual = residual;
    step.epilogue.activation = act;
    plan.steps.push_back(step);
    return step.output;
  }
};

}  // namespace test_plans
}  // namespace lipsync
