// Model inputs and outputs between the caller's NCHW float32 and the arena's NHWC storage type.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

namespace lipsync::cuda {

// in: [batch][c][pixels] float -> out: [batch][pixels][c] T.
template <typename T>
cudaError_t LaunchNchwToNhwc(const float* in, int64_t batch, int c, int64_t pixels, T* out,
                             cudaStream_t stream);

// in: [batch][pixels][c] T -> out: [batch][c][pixels] float, with an optional activation (for a
// plan that leaves the final sigmoid to the output conversion).
template <typename T>
cudaError_t LaunchNhwcToNchw(const T* in, int64_t batch, int c, int64_t pixels, Act act, float* out,
                             cudaStream_t stream);

}  // namespace lipsync::cuda
