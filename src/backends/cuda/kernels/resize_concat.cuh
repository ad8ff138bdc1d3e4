// Data movement steps of the plan, NHWC: resize (bilinear or nearest, graph/plan.h) + zero pad +
// channel concat in one pass (the UNet's Up block), plain concat, and constant pad.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"
#include "graph/plan.h"

namespace lipsync::cuda {

inline constexpr int kMaxConcatParts = 8;

// The parts written side by side on channels, in order; part 0 may be resized first.
template <typename T>
struct ConcatParts {
  const T* src[kMaxConcatParts] = {};
  int channels[kMaxConcatParts] = {};
  int count = 0;
};

struct ResizeSpec {
  bool resize = false;  // part 0 is resized and padded; otherwise it has the output's h and w
  graph::ResizeMode mode = graph::ResizeMode::kBilinearAlignCorners;
  int src_h = 0, src_w = 0;
  int resized_h = 0, resized_w = 0;      // part 0 after resizing
  int pad_top = 0, pad_left = 0;         // where the resized part 0 sits; zeros around it
  float scale_h = 1.0f, scale_w = 1.0f;  // ONNX's scale, for half-pixel and asymmetric bilinear
};

// The spec of a plan step's resize of a src_h x src_w part 0.
inline ResizeSpec ResizeSpecOf(const graph::ResizeParams& p, int64_t src_h, int64_t src_w) {
  ResizeSpec r;
  r.resize = true;
  r.mode = p.mode;
  r.src_h = static_cast<int>(src_h);
  r.src_w = static_cast<int>(src_w);
  r.resized_h = static_cast<int>(p.out_h);
  r.resized_w = static_cast<int>(p.out_w);
  r.pad_top = static_cast<int>(p.pad_top);
  r.pad_left = static_cast<int>(p.pad_left);
  r.scale_h = p.scale_h;
  r.scale_w = p.scale_w;
  return r;
}

// Where output row (or column) i of a bilinear resize reads its input, in [0, in - 1]: ONNX's
// coordinate transformations, in the reference backend's float arithmetic.
__device__ __forceinline__ float SourceCoordinate(graph::ResizeMode mode, int i, int in, int out,
                                                  float scale) {
  float f = 0.0f;
  if (mode == graph::ResizeMode::kBilinearAlignCorners) {  // the corner pixels coincide
    f = out > 1 ? static_cast<float>(i) * static_cast<float>(in - 1) / static_cast<float>(out - 1)
                : 0.0f;
  } else if (mode == graph::ResizeMode::kBilinearAsymmetric) {
    f = static_cast<float>(i) / scale;
  } else if (mode == graph::ResizeMode::kBilinearHalfPixel || out > 1) {  // pixel centres at + 0.5
    f = (static_cast<float>(i) + 0.5f) / scale - 0.5f;
  }
  return fminf(fmaxf(f, 0.0f), static_cast<float>(in - 1));
}

// V channels of part 0 at output pixel (y, x) of image n, resized and padded (zero outside the
// resized image). Shared with the fused block kernel's input loader, so both compute the same
// values.
template <typename T, int V>
__device__ __forceinline__ void ResizedVec(const T* src, int c0, const ResizeSpec& r, int64_t n,
                                           int y, int x, int c, float (&v)[V]) {
  const int ry = y - r.pad_top, rx = x - r.pad_left;
  if (ry < 0 || ry >= r.resized_h || rx < 0 || rx >= r.resized_w) {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = 0.0f;
    return;
  }
  const T* image = src + n * r.src_h * r.src_w * c0;
  if (r.mode == graph::ResizeMode::kNearest) {
    const int sy =
        min(static_cast<int>(static_cast<int64_t>(ry) * r.src_h / r.resized_h), r.src_h - 1);
    const int sx =
        min(static_cast<int>(static_cast<int64_t>(rx) * r.src_w / r.resized_w), r.src_w - 1);
    LoadVec<T, V>(image + (static_cast<int64_t>(sy) * r.src_w + sx) * c0 + c, v);
    return;
  }
  const float fy = SourceCoordinate(r.mode, ry, r.src_h, r.resized_h, r.scale_h);
  const float fx = SourceCoordinate(r.mode, rx, r.src_w, r.resized_w, r.scale_w);
  const int y0 = static_cast<int>(fy), x0 = static_cast<int>(fx);
  const int y1 = min(y0 + 1, r.src_h - 1), x1 = min(x0 + 1, r.src_w - 1);
  const float dy = fy - static_cast<float>(y0), dx = fx - static_cast<float>(x0);
  float a[V], b[V], cc[V], d[V];
  LoadVec<T, V>(image + (static_cast<int64_t>(y0) * r.src_w + x0) * c0 + c, a);
  LoadVec<T, V>(image + (static_cast<int64_t>(y0) * r.src_w + x1) * c0 + c, b);
  LoadVec<T, V>(image + (static_cast<int64_t>(y1) * r.src_w + x0) * c0 + c, cc);
  LoadVec<T, V>(image + (static_cast<int64_t>(y1) * r.src_w + x1) * c0 + c, d);
#pragma unroll
  for (int e = 0; e < V; ++e) {
    const float top = a[e] + (b[e] - a[e]) * dx;
    const float bottom = cc[e] + (d[e] - cc[e]) * dx;
    v[e] = top + (bottom - top) * dy;
  }
}

// out: [batch][h][w][sum of channels].
template <typename T>
cudaError_t LaunchResizeConcat(const ConcatParts<T>& parts, const ResizeSpec& resize, int64_t batch,
                               int h, int w, T* out, cudaStream_t stream);

struct PadSpec {
  int top = 0, left = 0;  // negative: a crop
  float value = 0.0f;
};

// in: [batch][in_h][in_w][c] -> out: [batch][out_h][out_w][c].
template <typename T>
cudaError_t LaunchPad(const T* in, int in_h, int in_w, const PadSpec& pad, int64_t batch, int out_h,
                      int out_w, int c, T* out, cudaStream_t stream);

}  // namespace lipsync::cuda
