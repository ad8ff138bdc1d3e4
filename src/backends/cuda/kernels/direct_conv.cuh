// Any convolution, one thread per output element: the fallback for grouped convolutions that
// are neither depthwise nor groups == 1 (none in the SyncTalk_2D family, but legal in a plan).
#pragma once

#include "backends/cuda/kernels/conv_types.cuh"

namespace lipsync::cuda {

// Weights [Cout][Kh][Kw][Cin/groups].
template <typename T>
cudaError_t LaunchDirectConv(const ConvGeometry& geometry, const ConvTensors<T>& tensors, Act act,
                             cudaStream_t stream);

}  // namespace lipsync::cuda
