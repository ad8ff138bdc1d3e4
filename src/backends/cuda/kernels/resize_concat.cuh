// Data movement steps of the plan, NHWC: resize (bilinear align_corners or nearest) + zero pad +
// channel concat in one pass (the UNet's Up block), plain concat, and constant pad.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

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
  bool resize = false;   // part 0 is resized and padded; otherwise it has the output's h and w
  bool nearest = false;  // else bilinear with align_corners
  int src_h = 0, src_w = 0;
  int resized_h = 0, resized_w = 0;  // part 0 after resizing
  int pad_top = 0, pad_left = 0;     // where the resized part 0 sits; zeros around it
};

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
  if (r.nearest) {
    const int sy =
        min(static_cast<int>(static_cast<int64_t>(ry) * r.src_h / r.resized_h), r.src_h - 1);
    const int sx =
        min(static_cast<int>(static_cast<int64_t>(rx) * r.src_w / r.resized_w), r.src_w - 1);
    LoadVec<T, V>(image + (static_cast<int64_t>(sy) * r.src_w + sx) * c0 + c, v);
    return;
  }
  // align_corners: the corner pixels of both grids coincide. Same float arithmetic as the
  // reference backend.
  const float fy = r.resized_h > 1 ? static_cast<float>(ry) * static_cast<float>(r.src_h - 1) /
                                         static_cast<float>(r.resized_h - 1)
                                   : 0.0f;
  const float fx = r.resized_w > 1 ? static_cast<float>(rx) * static_cast<float>(r.src_w - 1) /
                                         static_cast<float>(r.resized_w - 1)
                                   : 0.0f;
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
