// Dense convolutions with few output pixels and long reductions: the audio branch's 3x3
// convolutions at small batches (16x16 images, K = 9 * Cin up to 2304). The GEMM kernel tiles the
// few output pixels into a handful of blocks that each walk the whole K, leaving most of the GPU
// idle; here one warp computes one output channel for a few pixels, its lanes splitting K and
// summing with shuffles, so there are Cout x pixels / 8 warps to spread over the GPU.
#pragma once

#include "backends/cuda/kernels/conv_types.cuh"

namespace lipsync::cuda {

// Whether LaunchSmallImageConv is the better kernel: groups 1, a spatial (not 1x1) kernel, at
// least 32 input channels and at most kSmallImageMaxPixels output pixels in the batch.
inline constexpr int64_t kSmallImageMaxPixels = 1024;
bool UseSmallImageConv(const ConvGeometry& geometry);

template <typename T>
cudaError_t LaunchSmallImageConv(const ConvGeometry& geometry, const ConvTensors<T>& tensors,
                                 Act act, cudaStream_t stream);

}  // namespace lipsync::cuda
