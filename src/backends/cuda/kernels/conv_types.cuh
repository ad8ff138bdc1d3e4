// Arguments shared by the convolution kernels (NHWC activations; weight layouts as in
// graph/plan.h: pointwise [Cout][Cin], depthwise [Kh][Kw][C], dense [Cout][Kh][Kw][Cin/groups]).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

namespace lipsync::cuda {

struct ConvGeometry {
  int64_t batch = 1;
  int64_t h = 0, w = 0, cin = 0;     // input, per item
  int64_t oh = 0, ow = 0, cout = 0;  // output, per item
  int kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;  // bottom/right padding follows from the output size
  int groups = 1;
};

// `residual` (same shape as `out`) is added before the activation when it is not null; `bias`
// has Cout elements and may not be null.
template <typename T>
struct ConvTensors {
  const T* in = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  const T* residual = nullptr;
  T* out = nullptr;
};

}  // namespace lipsync::cuda
