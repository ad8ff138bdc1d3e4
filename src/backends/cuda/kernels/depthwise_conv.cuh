// Depthwise convolution (groups == Cin == Cout, any kernel size, stride and padding), NHWC, with
// the bias, optional residual and activation fused. Weights [Kh][Kw][C].
#pragma once

#include "backends/cuda/kernels/conv_types.cuh"

namespace lipsync::cuda {

template <typename T>
cudaError_t LaunchDepthwiseConv(const ConvGeometry& geometry, const ConvTensors<T>& tensors,
                                Act act, cudaStream_t stream);

}  // namespace lipsync::cuda
