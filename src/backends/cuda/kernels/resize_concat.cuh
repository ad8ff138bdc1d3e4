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
