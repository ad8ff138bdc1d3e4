// The fused groups of the kernel tests: an inverted-residual block with or without the
// resize-concat before it and a 1x1 convolution after it, and lone 1x1 convolutions with few
// pixels, as plan steps. The GPU tests plan and run them on the CUDA backend (tests/gpu), the CPU
// device tests run their kernels directly (tests/cuda_on_cpu).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "plan_builder.h"

namespace lipsync {
namespace test_plans {

struct GroupCase {
  std::string what;
  int64_t h, w;  // block input
  int64_t cin, hidden, cout, stride;
  bool residual;
  int64_t head_c0 = 0;  // > 0: a resize-concat builds the input from c0 resized + the rest
  graph::ResizeMode head_mode = graph::ResizeMode::kBilinearAlignCorners;
  int64_t head_pad = 0;   // the resized part sits this many rows down, zeros above
  int64_t tail_cout = 0;  // > 0: a 1x1 convolution with a sigmoid follows the block
};

inline int AddStep(PlanBuilder& b, PlanStep step, ItemShape out) {
  step.output = b.Buffer(out);
  b.plan.steps.push_back(step);
  return step.output;
}

inline PlanStep ConvStep(PlanBuilder& b, ConvKind kind, int input, int64_t cout, int64_t stride,
                         Activation act) {
  const ItemShape in = b.plan.buffers[input].shape;
  PlanStep s;
  s.kind = StepKind::kConv;
  s.name = "conv";
  s.inputs = {input};
  s.conv.kind = kind;
  s.conv.cin = in.c;
  s.conv.cout = cout;
  const bool dw = kind == ConvKind::kDepthwise;
  s.conv.kh = s.conv.kw = dw ? 3 : 1;
  s.conv.stride_h = s.conv.stride_w = stride;
  s.conv.pad_top = s.conv.pad_left = s.conv.pad_bottom = s.conv.pad_right = dw ? 1 : 0;
  s.conv.groups = dw ? in.c : 1;
  const int64_t fan_in = dw ? 9 : in.c;
  s.weight_count = dw ? 9 * cout : cout * in.c;
  s.weight_offset = b.Weights(s.weight_count, 1.7f / std::sqrt(static_cast<float>(fan_in)));
  s.bias_offset = b.Weights(cout, 0.5f);
  s.epilogue.activation = act;
  return s;
}

// The group's steps: [head] expand, depthwise, project [tail].
inline Plan BuildGroupSteps(const GroupCase& c, PlanBuilder& b) {
  int x;
  if (c.head_c0 > 0) {
    const int64_t rh = c.h - c.head_pad, rw = c.w;  // the resized part 0
    PlanStep head;
    head.kind = StepKind::kResizeConcat;
    head.name = "resize_concat";
    head.inputs = {b.Buffer({(rh + 1) / 2, (rw + 1) / 2, c.head_c0}),
                   b.Buffer({c.h, c.w, c.cin - c.head_c0})};
    head.resize.mode = c.head_mode;
    head.resize.out_h = rh;
    head.resize.out_w = rw;
    head.resize.scale_h = static_cast<float>(rh) / static_cast<float>((rh + 1) / 2);
    head.resize.scale_w = static_cast<float>(rw) / static_cast<float>((rw + 1) / 2);
    head.resize.pad_top = c.head_pad;
    x = AddStep(b, head, {c.h, c.w, c.cin});
  } else {
    x = b.Buffer({c.h, c.w, c.cin});
  }
  PlanStep e = ConvStep(b, ConvKind::kPointwise, x, c.hidden, 1, Activation::kRelu);
  const int ex = AddStep(b, e, {c.h, c.w, c.hidden});
  PlanStep d = ConvStep(b, ConvKind::kDepthwise, ex, c.hidden, c.stride, Activation::kRelu);
  const ItemShape dshape{(c.h - 1) / c.stride + 1, (c.w - 1) / c.stride + 1, c.hidden};
  const int dx = AddStep(b, d, dshape);
  PlanStep p = ConvStep(b, ConvKind::kPointwise, dx, c.cout, 1, Activation::kNone);
  if (c.residual) {
    p.inputs.push_back(x);
    p.epilogue.residual = true;
  }
  int out = AddStep(b, p, {dshape.h, dshape.w, c.cout});
  if (c.tail_cout > 0) {
    PlanStep t = ConvStep(b, ConvKind::kPointwise, out, c.tail_cout, 1, Activation::kSigmoid);
    out = AddStep(b, t, {dshape.h, dshape.w, c.tail_cout});
  }
  b.plan.buffers[out].is_output = true;
  return b.plan;
}

inline std::vector<GroupCase> FusedCases() {
  return {
      // The demo UNet's blocks (smaller images, odd sizes: partial tiles at the edges).
      {"inc: 6 -> 12 -> 32", 41, 37, 6, 12, 32, 1, false},
      {"down1.0: 32 -> 64 -> 32, stride 2", 43, 38, 32, 64, 32, 2, false},
      {"down1.1: 32 -> 64 -> 32 + residual", 37, 45, 32, 64, 32, 1, true},
      {"down2.1: 64 -> 128 -> 64 + residual", 20, 21, 64, 128, 64, 1, true},
      {"audio conv1 at 16x16", 16, 16, 32, 64, 64, 1, false},
      {"up5.0: resize-concat 32 + 32 -> 128 -> 16", 38, 34, 64, 128, 16, 1, false, 32},
      {"up4.0: resize-concat 32 + 32 -> 128 -> 32", 20, 18, 64, 128, 32, 1, false, 32},
      {"up5.1 + output conv: 16 -> 32 -> 16 + residual, 3 sigmoid", 35, 33, 16, 32, 16, 1, true, 0,
       graph::ResizeMode::kBilinearAlignCorners, 0, 3},
      // Other forms the kernels take: scalar loads (12 channels), nearest resize with padding
      // above, a half-pixel resize, a resize-concat whose parts are not multiples of 8 channels,
      // stride 2 with 64
      // outputs, a tail of 8 outputs.
      {"12 -> 24 -> 8", 19, 23, 12, 24, 8, 1, false},
      {"nearest resize 16 + 48, padded", 22, 20, 64, 128, 64, 1, false, 16,
       graph::ResizeMode::kNearest, 2},
      {"half-pixel resize 32 + 32 (PyTorch's align_corners=False)", 21, 18, 64, 128, 32, 1, false,
       32, graph::ResizeMode::kBilinearHalfPixel},
      {"resize-concat 12 + 20", 18, 18, 32, 64, 16, 1, false, 12},
      {"32 -> 64 -> 64, stride 2", 30, 31, 32, 64, 64, 2, false},
      {"16 -> 32 -> 32, tail 8", 17, 16, 16, 32, 32, 1, false, 0,
       graph::ResizeMode::kBilinearAlignCorners, 0, 8},
  };
}

// A lone 1x1 convolution with few pixels (a pointwise group): input [h][w][cin], optional
// residual of the output's shape, activation.
struct PointwiseCase {
  std::string what;
  int64_t h, w, cin, cout;
  bool residual;
  Activation act;
};

inline std::vector<PointwiseCase> PointwiseCases() {
  return {
      {"fuse_conv expand 1024 -> 2048 at 10x10", 10, 10, 1024, 2048, false, Activation::kRelu},
      {"down5 project 1024 -> 512 + residual", 10, 10, 1024, 512, true, Activation::kNone},
      {"up2 project 512 -> 64 at 40x40", 40, 40, 512, 64, false, Activation::kNone},
      {"odd sizes 48 -> 30 at 7x9, sigmoid", 7, 9, 48, 30, true, Activation::kSigmoid},
      {"16 -> 200 at 16x16", 16, 16, 16, 200, false, Activation::kRelu},
  };
}

inline Plan BuildPointwiseSteps(const PointwiseCase& c, PlanBuilder& b) {
  const int x = b.Buffer({c.h, c.w, c.cin});
  PlanStep s = ConvStep(b, ConvKind::kPointwise, x, c.cout, 1, c.act);
  if (c.residual) {
    s.inputs.push_back(b.Buffer({c.h, c.w, c.cout}));
    s.epilogue.residual = true;
  }
  const int out = AddStep(b, s, {c.h, c.w, c.cout});
  b.plan.buffers[out].is_output = true;
  return b.plan;
}

}  // namespace test_plans
}  // namespace lipsync
