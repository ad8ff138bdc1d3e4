// The two per-value conversions between a face's bytes and the model's floats, written once for
// the CPU paths (FillVisualInput, OutputToImage, the reference backend) and the CUDA frame
// kernels, so that every backend gives SyncTalk_2D's own values:
//   in:  img.astype(np.float32) / 255.0        (a float32 division, not a product with 1/255,
//                                               which differs by one ulp for 126 byte values)
//   out: np.array(pred * 255, dtype=np.uint8)  (truncation of 255 times the sigmoid output)
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LIPSYNC_HOST_DEVICE __host__ __device__
#else
#define LIPSYNC_HOST_DEVICE
#endif

namespace lipsync {

// One pixel value of the visual input: byte / 255 in float32, correctly rounded (on the GPU
// whatever nvcc's division flags).
LIPSYNC_HOST_DEVICE inline float VisualValue(uint8_t byte) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(static_cast<float>(byte), 255.0f);
#else
  return static_cast<float>(byte) / 255.0f;
#endif
}

// One model output value as a byte, as upstream's np.array(pred * 255, dtype=np.uint8) makes it:
// *255 in float32, clamped to [0, 255] (NaN to 0), truncated. Near saturation the runtimes'
// sigmoids round differently (PyTorch's is exactly 1.0 from a logit of about 16.6 and 1 - 2^-23
// just below; ONNX Runtime's CPU sigmoid returns 1.0, 1 - 2^-24 or 1 - 2^-23 anywhere between
// about 15.7 and 18), so no rule on the value can recover PyTorch's byte. Mapping 1 - 2^-24
// or 1 - 2^-23 to 255 was measured to disagree with PyTorch on more saturated pixels than the
// plain cast (docs/AVATARS.md), so the cast it is, on every backend.
LIPSYNC_HOST_DEVICE inline uint8_t OutputByte(float value) {
  float v = value * 255.0f;
  v = v > 0.0f ? v : 0.0f;  // NaN to 0
  v = v < 255.0f ? v : 255.0f;
  return static_cast<uint8_t>(static_cast<int32_t>(v));
}

}  // namespace lipsync
