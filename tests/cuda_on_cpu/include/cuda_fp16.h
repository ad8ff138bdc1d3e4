// Stand-in for CUDA's float16 header when kernels run on the CPU (cuda_runtime.h beside it):
// storage types and the conversions the kernels use, rounding to nearest even as the GPU does.
#pragma once

#include <cstdint>

#include "cuda_runtime.h"
#include "lipsync/tensor.h"

struct __half {
  uint16_t bits;
};
struct __half2 {
  __half x, y;
};

namespace lipsync::cuda_on_cpu {
// Every float16 value as a float, by its bits (cpu_device.cc): the kernels convert often enough
// that a table pays.
const float* HalfToFloatTable();
}  // namespace lipsync::cuda_on_cpu

inline __half __float2half_rn(float v) { return __half{lipsync::FloatToHalf(v)}; }
inline float __half2float(__half h) { return lipsync::cuda_on_cpu::HalfToFloatTable()[h.bits]; }
inline __half2 __floats2half2_rn(float a, float b) {
  return __half2{__float2half_rn(a), __float2half_rn(b)};
}
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
