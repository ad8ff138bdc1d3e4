// GPU memory for the CUDA benchmarks' inputs and outputs, and views of it for Engine::Run.
#pragma once

#include <cuda_runtime_api.h>

#include "lipsync/tensor.h"

namespace lipsync::bench {

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { cudaMalloc(&p, bytes); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// `t` copied into `buffer`, viewed there.
inline TensorView OnDevice(const Tensor& t, DeviceBuffer& buffer) {
  cudaMemcpy(buffer.p, t.data(), t.byte_size(), cudaMemcpyHostToDevice);
  TensorView v = t.view();
  v.data = buffer.p;
  v.memory = MemoryType::kDevice;
  return v;
}

// `buffer` viewed as a place for an output shaped like `t`.
inline MutableTensorView OutputOnDevice(Tensor& t, DeviceBuffer& buffer) {
  MutableTensorView v = t.mutable_view();
  v.data = buffer.p;
  v.memory = MemoryType::kDevice;
  return v;
}

}  // namespace lipsync::bench
