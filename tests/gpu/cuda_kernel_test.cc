// Every CUDA kernel family against the reference backend's plain CPU loops (which accumulate in
// double), through the same step dispatch the CUDA backend uses. Each case builds a one-step
// plan, draws fresh random inputs and weights, poisons the output with NaN, runs the step on
// the CPU and on the GPU, and checks that every output element was written, that the relative
// L2 error is under 1e-5 in float32 and 1e-2 in float16, and that every element is within a few
// units in the last place of the storage type plus a small share of the output's RMS (an L2
// bound alone would let a few wrong pixels of a large output through). In float16 the inputs
// and weights are rounded to half first, so both sides compute with the same values.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/step_runner.h"
#include "backends/reference/reference_kernels.h"
#include "gpu_test_util.h"
#include "graph/plan.h"
#include "lipsync/tensor.h"

namespace lipsync {
namespace {

using namespace testing_gpu;  // NOLINT: the shared helpers of these tests

constexpr double kFloat32Tolerance = 1e-5;
constexpr double kFloat16Tolerance = 1e-2;

// Per element: |got - want| <= kUlps * ulp(want) + kRms * rms(want), by storage type. In float32
// the kernels' summation order moves a value by about 1e-6 of the RMS at the largest fan-in
// here (2304 terms). In float16 they accumulate in float and round once (half an ulp); the fused
// block's intermediates round to half as the reference's do, but a value that lands on the
// other side of a rounding step moves the output by a fraction of an ulp of its inputs.
// A wrong element is off by about the RMS.
struct ElementBound {
  double ulps, rms;
};
constexpr ElementBound kFloat32Element{8, 1e-4};
constexpr ElementBound kFloat16Element{2, 1.0 / 512};

// Arena contents: every buffer but the step's output random in [-1, 1], the output NaN.
std::vector<float> RandomArena(const Plan& plan, int64_t batch, bool to_half, std::mt19937& rng) {
  std::vector<float> arena(static_cast<size_t>(plan.arena_floats * batch),
                           std::numeric_limits<float>::quiet_NaN());
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int output = plan.steps[0].output;
  for (size_t id = 0; id < plan.buffers.size(); ++id) {
    if (static_cast<int>(id) == output) continue;
    const auto& b = plan.buffers[id];
    float* p = arena.data() + b.offset * batch;
    for (int64_t i = 0; i < b.size * batch; ++i)
      p[i] = to_half ? RoundToHalf(dist(rng)) : dist(rng);
  }
  return arena;
}

// The spacing of the storage type's values at |v| (float16: 10 mantissa bits, normal from 2^-14;
// float32: 23 bits, normal from 2^-126).
double Ulp(double v, Storage storage) {
  const bool half = storage == Storage::kFloat16;
  const int mantissa = half ? 10 : 23, min_exponent = half ? -14 : -126;
  int exponent = 0;
  std::frexp(std::fabs(v), &exponent);  // |v| = m * 2^exponent, m in [0.5, 1)
  if (v == 0.0) exponent = min_exponent + 1;
  return std::ldexp(1.0, std::max(exponent - 1, min_exponent) - mantissa);
}

// Every element finite, ||got - want|| / ||want|| under `tolerance`, and every element within
// the storage type's ElementBound of its reference.
void ExpectClose(const float* got, const float* want, int64_t count, double tolerance,
                 Storage storage, const std::string& what) {
  double diff = 0.0, norm = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_TRUE(std::isfinite(got[i]))
        << what << ": element " << i << " is " << got[i] << " (not written, or overflowed)";
    const double d = static_cast<double>(got[i]) - want[i];
    diff += d * d;
    norm += static_cast<double>(want[i]) * want[i];
  }
  ASSERT_GT(norm, 0.0) << what << ": the reference output is all zeros, the case proves nothing";
  const double relative = std::sqrt(diff / norm);
  EXPECT_LT(relative, tolerance) << what << ": relative L2 error " << relative;

  const ElementBound e = storage == Storage::kFloat16 ? kFloat16Element : kFloat32Element;
  const double floor = e.rms * std::sqrt(norm / static_cast<double>(count));
  int64_t over = 0, worst = -1;
  double worst_ratio = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    const double bound = e.ulps * Ulp(want[i], storage) + floor;
    const double ratio = std::fabs(static_cast<double>(got[i]) - want[i]) / bound;
    if (ratio > 1.0) ++over;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  EXPECT_EQ(over, 0) << what << ": " << over << " of " << count
                     << " elements beyond their bound; the worst, element " << worst << ", is "
                     << got[worst] << " for " << want[worst] << " (" << worst_ratio
                     << " times its bound of " << e.ulps << " ulps + " << floor << ")";
}

// Runs the plan's single step on both sides for `batch` items and compares the output buffer.
void CheckStep(PlanBuilder& builder, int64_t batch, Storage storage, const std::string& what) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  Plan plan = builder.plan;
  const bool half = storage == Storage::kFloat16;
  if (half) {
    for (float& w : plan.weights) w = RoundToHalf(w);
  }
  std::vector<float> arena = RandomArena(plan, batch, half, builder.rng);
  std::vector<float> expected = arena;
  reference::RunStep(plan, plan.steps[0], batch, expected.data(), 0);

  const size_t element = cuda::StorageSize(storage);
  DeviceBuffer device_arena(arena.size() * element);
  DeviceBuffer device_weights(plan.weights.size() * element);
  ASSERT_NE(device_arena.ptr, nullptr);
  ASSERT_NE(device_weights.ptr, nullptr);
  Upload(arena, storage, device_arena.ptr);
  Upload(plan.weights, storage, device_weights.ptr);
  const cuda::DeviceTensors tensors{storage, device_arena.ptr, device_weights.ptr};
  const Status launched = cuda::EnqueueStep(plan, 0, batch, tensors, nullptr);
  ASSERT_TRUE(launched.ok()) << launched.ToString();
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> got(arena.size());
  Download(device_arena.ptr, storage, got);

  const auto& out = plan.buffers[plan.steps[0].output];
  const int64_t offset = out.offset * batch;
  ExpectClose(got.data() + offset, expected.data() + offset, out.size * batch,
              half ? kFloat16Tolerance : kFloat32Tolerance, storage,
              what + " (" + cuda::StorageName(storage) + ", batch " + std::to_string(batch) + ")");
}

// The same case in both storage types, each with its own fresh random data.
template <typename Build>
void CheckBoth(Build build, int64_t batch, const std::string& what) {
  for (const Storage storage : {Storage::kFloat32, Storage::kFloat16}) {
    const uint32_t seed = FreshSeed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    PlanBuilder builder(seed);
    build(builder);
    CheckStep(builder, batch, storage, what);
  }
}

TEST(CudaKernels, PointwiseConv) {
  struct Case {
    int64_t h, w, cin, cout;
    bool residual;
    Activation act;
  };
  const Case cases[] = {
      {7, 9, 6, 12, false, Activation::kRelu},      // K not a multiple of 8: scalar loads
      {10, 10, 64, 128, false, Activation::kRelu},  // vector loads, 64-wide tiles
      {5, 13, 32, 3, false, Activation::kSigmoid},  // 3 outputs: 32-wide tile, scalar epilogue
      {4, 5, 2048, 512, true, Activation::kNone},   // long K, residual
      {3, 3, 16, 200, true, Activation::kRelu},     // N not a multiple of the tile
      {11, 7, 12, 32, false, Activation::kNone},    // narrow, scalar loads
      {9, 9, 40, 24, true, Activation::kSigmoid},   // K and N multiples of 8 only
  };
  for (const Case& c : cases) {
    CheckBoth(
        [&](PlanBuilder& b) {
          b.Conv(ConvKind::kPointwise, {c.h, c.w, c.cin}, c.cout, 1, 1, 1, 1, 0, 0, 1, c.residual,
                 c.act);
        },
        3,
        "pointwise " + std::to_string(c.cin) + "->" + std::to_string(c.cout) + " at " +
            std::to_string(c.h) + "x" + std::to_string(c.w));
  }
}

TEST(CudaKernels, DepthwiseConv) {
  struct Case {
    int64_t h, w, c, stride;
    bool residual;
  };
  const Case cases[] = {
      {16, 16, 64, 1, false},
      {11, 11, 64, 2, false},
      {9, 7, 12, 1, true},
      {10, 10, 1024, 1, true},
      {20, 20, 512, 2, false},
      {5, 6, 3, 2, false},
      // Channel counts that are not a multiple of 8: 8-byte (12, 20) and 4-byte (6) vectors.
      {33, 17, 12, 1, false},
      {12, 12, 12, 2, true},
      {7, 9, 20, 1, true},
      {8, 8, 6, 1, false},
      {9, 5, 6, 2, true},
  };
  for (const Case& c : cases) {
    CheckBoth(
        [&](PlanBuilder& b) {
          b.Conv(ConvKind::kDepthwise, {c.h, c.w, c.c}, c.c, 3, 3, c.stride, c.stride, 1, 1, c.c,
                 c.residual, Activation::kRelu);
        },
        2,
        "depthwise 3x3/" + std::to_string(c.stride) + " C=" + std::to_string(c.c) + " at " +
            std::to_string(c.h) + "x" + std::to_string(c.w));
  }
}

// The inverted-residual block (expand 1x1 + ReLU, depthwise 3x3 + ReLU, project 1x1 with or
// without residual) as three chained steps: the reference loops run them one by one, the CUDA
// backend as one fused kernel; the block's output must agree and be written in full.
struct BlockCase {
  int64_t h, w, cin, cout, stride;
  bool residual;
  Activation act;
};

void CheckFusedBlock(const BlockCase& c, Storage storage, int64_t batch) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  const uint32_t seed = FreshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  PlanBuilder b(seed);
  const int x = b.Buffer({c.h, c.w, c.cin});
  const int64_t hidden = 2 * c.cin;
  const int e =
      b.ConvOn(x, ConvKind::kPointwise, hidden, 1, 1, 1, 1, 0, 0, 1, false, Activation::kRelu);
  const int d = b.ConvOn(e, ConvKind::kDepthwise, hidden, 3, 3, c.stride, c.stride, 1, 1, hidden,
                         false, Activation::kRelu);
  const int out = b.ConvOn(d, ConvKind::kPointwise, c.cout, 1, 1, 1, 1, 0, 0, 1, c.residual, c.act);
  Plan plan = b.plan;
  plan.buffers[e].first_step = 0;
  plan.buffers[e].last_step = 1;
  plan.buffers[d].first_step = 1;
  plan.buffers[d].last_step = 2;
  plan.buffers[out].first_step = 2;
  plan.buffers[out].last_step = 3;
  plan.buffers[out].is_output = true;
  const bool half = storage == Storage::kFloat16;
  if (half) {
    for (float& w : plan.weights) w = RoundToHalf(w);
  }
  const std::string what = "block " + std::to_string(c.h) + "x" + std::to_string(c.w) + "x" +
                           std::to_string(c.cin) + " -> " + std::to_string(c.cout) + " stride " +
                           std::to_string(c.stride) + " (" + cuda::StorageName(storage) +
                           ", batch " + std::to_string(batch) + ")";
  ASSERT_TRUE(cuda::FusedBlockStarts(plan, storage)[0]) << what << " was not fused";

  std::vector<float> arena = RandomArena(plan, batch, half, b.rng);
  const auto& ob = plan.buffers[out];
  std::fill(arena.begin() + ob.offset * batch, arena.begin() + (ob.offset + ob.size) * batch,
            std::numeric_limits<float>::quiet_NaN());
  std::vector<float> expected = arena;
  for (const auto& step : plan.steps) {
    reference::RunStep(plan, step, batch, expected.data(), 0);
    if (half) {  // the unfused half path stores every step's output as half
      const auto& sb = plan.buffers[step.output];
      for (int64_t i = 0; i < sb.size * batch; ++i) {
        float& v = expected[sb.offset * batch + i];
        v = RoundToHalf(v);
      }
    }
  }
  const size_t element = cuda::StorageSize(storage);
  DeviceBuffer device_arena(arena.size() * element);
  DeviceBuffer device_weights(plan.weights.size() * element);
  ASSERT_NE(device_arena.ptr, nullptr);
  ASSERT_NE(device_weights.ptr, nullptr);
  Upload(arena, storage, device_arena.ptr);
  Upload(plan.weights, storage, device_weights.ptr);
  const Status prepared = cuda::PrepareFusedBlocks();
  ASSERT_TRUE(prepared.ok()) << prepared.ToString();
  const cuda::DeviceTensors tensors{storage, device_arena.ptr, device_weights.ptr};
  const Status launched = cuda::EnqueueFusedBlock(plan, 0, batch, tensors, nullptr);
  ASSERT_TRUE(launched.ok()) << launched.ToString();
  ASSERT_CUDA(cudaDeviceSynchronize());
  std::vector<float> got(arena.size());
  Download(device_arena.ptr, storage, got);
  ExpectClose(got.data() + ob.offset * batch, expected.data() + ob.offset * batch, ob.size * batch,
              half ? kFloat16Tolerance : kFloat32Tolerance, storage, what);
}

TEST(CudaKernels, FusedInvertedResidualBlock) {
  const BlockCase cases[] = {
      {20, 20, 12, 12, 1, true, Activation::kNone},   // the first block's shape, residual
      {33, 17, 16, 24, 2, false, Activation::kNone},  // stride 2, odd sizes, partial tiles
      {40, 40, 32, 32, 1, true, Activation::kRelu},   // the largest hidden that fits in float32
      {9, 9, 6, 8, 1, false, Activation::kSigmoid},   // tiny, one tile
      {16, 16, 8, 16, 2, true, Activation::kNone},    // stride 2 with a residual of its shape
      {7, 30, 20, 3, 1, false, Activation::kNone},    // 3 outputs, wide image
  };
  for (const BlockCase& c : cases) {
    for (const Storage storage : {Storage::kFloat32, Storage::kFloat16}) {
      CheckFusedBlock(c, storage, 3);
    }
  }
}

TEST(CudaKernels, FusedBlockLeavesLargeOrOverlappingBlocksUnfused) {
  // 256 input channels: the expanded tile does not fit in shared memory.
  PlanBuilder b(1);
  const int x = b.Buffer({8, 8, 256});
  const int e =
      b.ConvOn(x, ConvKind::kPointwise, 512, 1, 1, 1, 1, 0, 0, 1, false, Activation::kRelu);
  const int d =
      b.ConvOn(e, ConvKind::kDepthwise, 512, 3, 3, 1, 1, 1, 1, 512, false, Activation::kRelu);
  b.ConvOn(d, ConvKind::kPointwise, 256, 1, 1, 1, 1, 0, 0, 1, false, Activation::kNone);
  b.plan.buffers[e].last_step = 1;
  b.plan.buffers[d].last_step = 2;
  EXPECT_FALSE(cuda::FusedBlockStarts(b.plan, Storage::kFloat16)[0]);
  // A small block whose expanded tensor is read again later may not be fused.
  PlanBuilder s(2);
  const int x2 = s.Buffer({8, 8, 8});
  const int e2 =
      s.ConvOn(x2, ConvKind::kPointwise, 16, 1, 1, 1, 1, 0, 0, 1, false, Activation::kRelu);
  const int d2 =
      s.ConvOn(e2, ConvKind::kDepthwise, 16, 3, 3, 1, 1, 1, 1, 16, false, Activation::kRelu);
  s.ConvOn(d2, ConvKind::kPointwise, 8, 1, 1, 1, 1, 0, 0, 1, false, Activation::kNone);
  s.plan.buffers[e2].last_step = 5;
  s.plan.buffers[d2].last_step = 2;
  EXPECT_FALSE(cuda::FusedBlockStarts(s.plan, Storage::kFloat16)[0]);
  s.plan.buffers[e2].last_step = 1;
  EXPECT_TRUE(cuda::FusedBlockStarts(s.plan, Storage::kFloat16)[0]);
}

// The audio branch's 3x3 convolutions at small batches go to the small-image kernel (one warp per
// output channel and 8 pixels) up to 1024 output pixels; larger batches to the GEMM. Both against
// the reference loops.
TEST(CudaKernels, SmallImageConv) {
  struct Case {
    int64_t h, w, cin, cout, s, pad, batch;
    bool residual;
    const char* what;
  };
  const Case cases[] = {
      {16, 16, 128, 256, 1, 1, 1, false, "audio conv3 at batch 1"},
      {16, 16, 256, 512, 2, 3, 1, true, "audio conv5 at batch 1, residual"},
      {16, 16, 128, 256, 1, 1, 4, false, "audio conv3 at batch 4 (1024 pixels)"},
      {5, 7, 40, 24, 1, 1, 3, true, "odd sizes, a partial pixel group, Cin not a multiple of 32"},
      {16, 16, 128, 256, 1, 1, 8, false, "batch 8: the GEMM again"},
  };
  for (const Case& c : cases) {
    CheckBoth(
        [&](PlanBuilder& b) {
          b.Conv(ConvKind::kDense, {c.h, c.w, c.cin}, c.cout, 3, 3, c.s, c.s, c.pad, c.pad, 1,
                 c.residual, Activation::kRelu);
        },
        c.batch, c.what);
  }
}

TEST(CudaKernels, DenseConv) {
  struct Case {
    int64_t h, w, cin, cout, k, s_h, s_w, pad, groups;
    const char* what;
  };
  const Case cases[] = {
      {16, 16, 128, 256, 3, 1, 1, 1, 1, "audio conv3: 3x3/1 pad 1"},
      {16, 16, 256, 512, 3, 2, 2, 3, 1, "audio conv5: 3x3/2 pad 3"},
      {16, 32, 256, 256, 3, 1, 2, 1, 1, "wenet conv3: 3x3/(1,2) pad 1"},
      {32, 32, 128, 256, 3, 2, 2, 1, 1, "hubert conv3: 3x3/2 pad 1"},
      {9, 10, 3, 20, 5, 1, 1, 2, 1, "5x5, 3 input channels: scalar gather"},
      {8, 8, 16, 32, 3, 1, 1, 1, 2, "grouped (2 groups): direct kernel"},
  };
  for (const Case& c : cases) {
    CheckBoth(
        [&](PlanBuilder& b) {
          b.Conv(ConvKind::kDense, {c.h, c.w, c.cin}, c.cout, c.k, c.k, c.s_h, c.s_w, c.pad, c.pad,
                 c.groups, false, Activation::kRelu);
        },
        2, c.what);
  }
}

// Resize of part 0 (bilinear or nearest, ONNX's scale resized / src) placed with padding, then
// the others.
void ResizeConcatCase(PlanBuilder& b, ItemShape src, int64_t out_h, int64_t out_w,
                      int64_t resized_h, int64_t resized_w, int64_t pad_top, int64_t pad_left,
                      std::vector<int64_t> skip_channels, graph::ResizeMode mode) {
  PlanStep step;
  step.kind = StepKind::kResizeConcat;
  step.name = "resize_concat";
  step.inputs.push_back(b.Buffer(src));
  int64_t channels = src.c;
  for (int64_t c : skip_channels) {
    step.inputs.push_back(b.Buffer({out_h, out_w, c}));
    channels += c;
  }
  step.resize.mode = mode;
  step.resize.out_h = resized_h;
  step.resize.out_w = resized_w;
  step.resize.scale_h = static_cast<float>(resized_h) / static_cast<float>(src.h);
  step.resize.scale_w = static_cast<float>(resized_w) / static_cast<float>(src.w);
  step.resize.pad_top = pad_top;
  step.resize.pad_left = pad_left;
  step.output = b.Buffer({out_h, out_w, channels});
  b.plan.steps.push_back(step);
}

TEST(CudaKernels, ResizeConcat) {
  using graph::ResizeMode;
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {10, 10, 256}, 20, 20, 20, 20, 0, 0, {256},
                         ResizeMode::kBilinearAlignCorners);
      },
      2, "up1: 10x10x256 -> 20x20, skip 256");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {160, 160, 32}, 320, 320, 320, 320, 0, 0, {32},
                         ResizeMode::kBilinearAlignCorners);
      },
      1, "up5: 160x160x32 -> 320x320, skip 32");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {9, 9, 12}, 19, 20, 18, 18, 0, 1, {6, 10},
                         ResizeMode::kBilinearAlignCorners);
      },
      2, "odd sizes: 9x9 -> 18x18 padded into 19x20, two skips");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {7, 5, 16}, 14, 10, 14, 10, 0, 0, {16}, ResizeMode::kNearest);
      },
      2, "nearest 7x5 -> 14x10");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {1, 1, 8}, 4, 4, 4, 4, 0, 0, {}, ResizeMode::kBilinearAlignCorners);
      },
      3, "1x1 source, no skip");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {9, 9, 12}, 19, 20, 18, 18, 0, 1, {6, 10},
                         ResizeMode::kBilinearHalfPixel);
      },
      2, "half-pixel 9x9 -> 18x18 padded into 19x20, two skips");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {7, 5, 16}, 14, 7, 14, 7, 0, 0, {16},
                         ResizeMode::kBilinearPytorchHalfPixel);
      },
      2, "pytorch half-pixel 7x5 -> 14x7");
  CheckBoth(
      [](PlanBuilder& b) {
        ResizeConcatCase(b, {7, 5, 16}, 14, 10, 14, 10, 0, 0, {16},
                         ResizeMode::kBilinearAsymmetric);
      },
      2, "asymmetric bilinear 7x5 -> 14x10");
}

TEST(CudaKernels, Concat) {
  CheckBoth(
      [](PlanBuilder& b) {
        PlanStep step;
        step.kind = StepKind::kConcat;
        step.name = "concat";
        for (int64_t c : {512, 512}) step.inputs.push_back(b.Buffer({10, 10, c}));
        step.output = b.Buffer({10, 10, 1024});
        b.plan.steps.push_back(step);
      },
      3, "concat 512 + 512 at 10x10");
  CheckBoth(
      [](PlanBuilder& b) {
        PlanStep step;
        step.kind = StepKind::kConcat;
        step.name = "concat";
        for (int64_t c : {3, 8, 5}) step.inputs.push_back(b.Buffer({6, 7, c}));
        step.output = b.Buffer({6, 7, 16});
        b.plan.steps.push_back(step);
      },
      2, "concat 3 + 8 + 5");
}

TEST(CudaKernels, Pad) {
  struct Case {
    int64_t top, left, bottom, right;
    int64_t c;
  };
  for (const Case& c : {Case{1, 2, 3, 0, 16}, Case{-1, 0, 2, -2, 5}, Case{0, 0, 0, 0, 8}}) {
    CheckBoth(
        [&](PlanBuilder& b) {
          PlanStep step;
          step.kind = StepKind::kPad;
          step.name = "pad";
          const ItemShape in{9, 8, c.c};
          step.inputs.push_back(b.Buffer(in));
          step.pad = {c.top, c.left, c.bottom, c.right, 0.5f};
          step.output = b.Buffer({in.h + c.top + c.bottom, in.w + c.left + c.right, c.c});
          b.plan.steps.push_back(step);
        },
        2,
        "pad " + std::to_string(c.top) + "," + std::to_string(c.left) + "," +
            std::to_string(c.bottom) + "," + std::to_string(c.right));
  }
}

TEST(CudaKernels, Elementwise) {
  struct Case {
    StepKind kind;
    Activation act;
    ItemShape shape;
  };
  const Case cases[] = {
      {StepKind::kAdd, Activation::kRelu, {10, 10, 64}},
      {StepKind::kAdd, Activation::kNone, {3, 5, 7}},
      {StepKind::kActivation, Activation::kSigmoid, {8, 8, 16}},
      {StepKind::kActivation, Activation::kRelu, {5, 5, 3}},
      {StepKind::kCopy, Activation::kNone, {4, 4, 9}},
  };
  for (const Case& c : cases) {
    CheckBoth(
        [&](PlanBuilder& b) {
          PlanStep step;
          step.kind = c.kind;
          step.name = graph::StepKindName(c.kind);
          step.inputs.push_back(b.Buffer(c.shape));
          if (c.kind == StepKind::kAdd) step.inputs.push_back(b.Buffer(c.shape));
          step.epilogue.activation = c.act;
          step.output = b.Buffer(c.shape);
          b.plan.steps.push_back(step);
        },
        3, std::string(graph::StepKindName(c.kind)) + " " + graph::ActivationName(c.act));
  }
}

// NCHW float32 in, NHWC storage type in the arena, and back out to NCHW float32.
TEST(CudaKernels, LayoutConversions) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  for (const Storage storage : {Storage::kFloat32, Storage::kFloat16}) {
    const uint32_t seed = FreshSeed();
    SCOPED_TRACE("seed " + std::to_string(seed));
    PlanBuilder b(seed);
    const ItemShape shape{13, 11, 6};
    const int64_t batch = 3;
    const int id = b.Buffer(shape);
    b.plan.inputs.push_back({"visual", {-1, shape.c, shape.h, shape.w}, id});
    b.plan.outputs.push_back({"output", {-1, shape.c, shape.h, shape.w}, id});
    const Plan& plan = b.plan;
    const int64_t count = shape.elements() * batch;
    std::vector<float> nchw(static_cast<size_t>(count));
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (float& v : nchw) v = dist(b.rng);

    DeviceBuffer in(count * 4), out(count * 4), arena(plan.arena_floats * batch * 4);
    ASSERT_CUDA(cudaMemcpy(in.ptr, nchw.data(), count * 4, cudaMemcpyHostToDevice));
    std::vector<float> poison(static_cast<size_t>(plan.arena_floats * batch),
                              std::numeric_limits<float>::quiet_NaN());
    Upload(poison, storage, arena.ptr);
    ASSERT_CUDA(cudaMemset(out.ptr, 0xff, count * 4));  // NaN bit patterns
    const cuda::DeviceTensors tensors{storage, arena.ptr, nullptr};
    Status s =
        cuda::EnqueueInput(plan, 0, static_cast<const float*>(in.ptr), batch, tensors, nullptr);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_CUDA(cudaDeviceSynchronize());

    // The arena holds the NHWC transpose.
    std::vector<float> nhwc(poison.size());
    Download(arena.ptr, storage, nhwc);
    std::vector<float> want(static_cast<size_t>(count));
    const int64_t pixels = shape.h * shape.w;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < shape.c; ++c) {
        for (int64_t p = 0; p < pixels; ++p) {
          const float v = nchw[(n * shape.c + c) * pixels + p];
          want[(n * pixels + p) * shape.c + c] = storage == Storage::kFloat16 ? RoundToHalf(v) : v;
        }
      }
    }
    ExpectClose(nhwc.data(), want.data(), count, 1e-7, storage, "NCHW -> NHWC");

    s = cuda::EnqueueOutput(plan, 0, batch, tensors, static_cast<float*>(out.ptr), nullptr);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_CUDA(cudaDeviceSynchronize());
    std::vector<float> back(static_cast<size_t>(count));
    ASSERT_CUDA(cudaMemcpy(back.data(), out.ptr, count * 4, cudaMemcpyDeviceToHost));
    ExpectClose(back.data(), nchw.data(), count, storage == Storage::kFloat16 ? 1e-3 : 1e-7,
                storage, "NCHW -> NHWC -> NCHW");
  }
}

TEST(CudaKernels, UnsupportedStepsAreNamed) {
  PlanBuilder b(1);
  b.Conv(ConvKind::kDepthwise, {8, 8, 16}, 16, 3, 3, 1, 1, 1, 1, 16, false, Activation::kNone);
  b.plan.steps[0].conv.groups = 8;  // not depthwise any more
  const Status s = cuda::CheckPlanSupported(b.plan, 64);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s.ToString();
  EXPECT_NE(s.message().find("step 0"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace lipsync
