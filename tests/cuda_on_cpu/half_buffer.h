// float16 tensors in host memory for the kernels on the CPU device: filled from floats or with
// NaN (so that an element a kernel leaves unwritten shows), with a guard after the end that a
// write past it changes.
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "lipsync/tensor.h"

namespace lipsync::cuda_on_cpu {

class HalfBuffer {
 public:
  static constexpr size_t kGuard = 64;
  static constexpr uint16_t kGuardValue = 0x5a5a;
  static constexpr uint16_t kNaN = 0x7e00;

  explicit HalfBuffer(size_t count) : bits_(count + kGuard, kNaN), count_(count) {
    for (size_t i = count; i < bits_.size(); ++i) bits_[i] = kGuardValue;
  }
  HalfBuffer(const float* values, size_t count) : HalfBuffer(count) {
    for (size_t i = 0; i < count; ++i) bits_[i] = FloatToHalf(values[i]);
  }

  __half* data() { return reinterpret_cast<__half*>(bits_.data()); }
  size_t size() const { return count_; }

  std::vector<float> ToFloats() const {
    std::vector<float> out(count_);
    for (size_t i = 0; i < count_; ++i) out[i] = HalfToFloat(bits_[i]);
    return out;
  }

  bool GuardIntact() const {
    for (size_t i = count_; i < bits_.size(); ++i) {
      if (bits_[i] != kGuardValue) return false;
    }
    return true;
  }

 private:
  std::vector<uint16_t> bits_;
  size_t count_;
};

}  // namespace lipsync::cuda_on_cpu
