// Elementwise steps: out = act(a + b) (b may be null: a plain activation or copy).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

namespace lipsync::cuda {

template <typename T>
cudaError_t LaunchElementwise(const T* a, const T* b, int64_t count, Act act, T* out,
                              cudaStream_t stream);

}  // namespace lipsync::cuda
