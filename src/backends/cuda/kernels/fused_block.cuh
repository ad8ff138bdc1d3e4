// The inverted-residual block in one kernel: expand 1x1 + ReLU, depthwise 3x3 + ReLU, project 1x1
// (+ residual, + activation). Each thread block computes a TILE x TILE square of output pixels of
// one image for every output channel; the expanded and depthwise tensors of that square (with its
// halo) stay in shared memory and are never written to global memory. This is where the model's
// memory traffic goes (the expanded tensor is twice the block's input), so it pays where the
// shapes fit on chip: small channel counts at high resolution.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/kernels/common.cuh"

namespace lipsync::cuda {

struct FusedBlockGeometry {
  int batch = 1;
  int h = 0, w = 0, cin = 0;  // block input (NHWC)
  int hidden = 0;             // expanded channels
  int oh = 0, ow = 0, cout = 0;
  int stride = 1;                 // depthwise stride: 1 or 2
  int pad_top = 1, pad_left = 1;  // depthwise padding (bottom/right follow from the output size)
};

template <typename T>
struct FusedBlockTensors {
  const T* in = nullptr;
  const T* expand_weight = nullptr;     // [hidden][cin]
  const T* expand_bias = nullptr;       // [hidden]
  const T* depthwise_weight = nullptr;  // [3][3][hidden]
  const T* depthwise_bias = nullptr;    // [hidden]
  const T* project_weight = nullptr;    // [cout][hidden]
  const T* project_bias = nullptr;      // [cout]
  const T* residual = nullptr;          // like out, or null
  T* out = nullptr;
};

// The most shared memory one block may use; shapes that need more are not fused.
inline constexpr size_t kMaxFusedBlockSharedBytes = 64 * 1024;
// The widest expanded tensor fused. The kernel multiplies on the CUDA cores; wider blocks have
// enough arithmetic per byte that the unfused tensor-core GEMMs are expected to win (a guess the
// benchmark's unfused rows check).
inline constexpr int kMaxFusedHidden = 64;

// Shared memory the kernel needs for these shapes with elements of `element_size` bytes.
size_t FusedBlockSharedBytes(const FusedBlockGeometry& g, size_t element_size);

// Lets the kernels use kMaxFusedBlockSharedBytes (above the default 48 KiB) on the current
// device; call once per device before the first launch (not during graph capture).
cudaError_t PrepareFusedBlockKernels();

template <typename T>
cudaError_t LaunchFusedBlock(const FusedBlockGeometry& g, const FusedBlockTensors<T>& t, Act act,
                             cudaStream_t stream);

}  // namespace lipsync::cuda
