// 1x1 convolutions with few output pixels (the UNet's 10x10 to 40x40 layers at small batches), in
// float16 on the tensor cores. The GEMM kernel's 128-row tiles leave most of the GPU idle there and
// walk the whole reduction in one block; here a block owns 16 pixels x 64 outputs and its 8 warps
// split the reduction, each summing every 8th slice of 16 input channels with mma.sync, then the
// block adds the 8 partial sums in a fixed order (so results do not change from run to run) and
// applies bias, residual and activation.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

namespace lipsync::cuda {

struct SmallPointwise {
  const __half* in = nullptr;        // [m][k]
  const __half* weight = nullptr;    // [n][k]
  const __half* bias = nullptr;      // [n]
  const __half* residual = nullptr;  // [m][n] or null
  __half* out = nullptr;             // [m][n]
  int m = 0, n = 0, k = 0;
  Act act = Act::kNone;
};

// Whether the kernel takes these sizes: k a multiple of 16, n even.
bool SmallPointwiseSupports(int64_t m, int64_t n, int64_t k);

cudaError_t LaunchSmallPointwise(const SmallPointwise& p, cudaStream_t stream);

}  // namespace lipsync::cuda
