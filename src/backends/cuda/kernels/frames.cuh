// The frame form on the GPU: BGR uint8 faces into the visual input's NHWC arena buffer (mouth
// mask, scaling, storage type), and the NHWC output buffer back to BGR uint8 faces. Both are the
// CPU path's FillVisualInput / OutputToImage arithmetic, value for value: both call
// lipsync/face_values.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace lipsync::cuda {

struct FaceGeometry {
  int size = 320;         // S: the model's inner face
  int source_size = 320;  // rows and columns of each source face: S, or the crop size
  int offset = 0;         // where the inner face starts in the source (0, or the crop offset)
  int mask_x = 5, mask_y = 5, mask_w = 310, mask_h = 305;
};

// faces: [batch][source][source][3] uint8 -> visual: [batch][S][S][6] T, channels 0-2 the face
// / 255, channels 3-5 the same with the mouth rectangle zeroed.
template <typename T>
cudaError_t LaunchFacesToVisual(const uint8_t* faces, int64_t batch, const FaceGeometry& g,
                                T* visual, cudaStream_t stream);

// nhwc: [count] T (a [batch][S][S][3] output buffer) -> bytes: OutputByte of each value.
template <typename T>
cudaError_t LaunchOutputToBytes(const T* nhwc, int64_t count, uint8_t* bytes, cudaStream_t stream);

}  // namespace lipsync::cuda
