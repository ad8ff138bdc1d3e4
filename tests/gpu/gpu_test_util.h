// Helpers of the GPU kernel tests: one-step plans built in memory, random weights scaled like a
// trained layer's, and host floats to and from device memory of either storage type.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/step_runner.h"
#include "graph/plan.h"
#include "lipsync/tensor.h"
#include "plan_builder.h"

namespace lipsync {
namespace testing_gpu {

using cuda::Storage;
// The plan builder and the plan's names it uses (Plan, PlanStep, ConvKind, ...).
using namespace test_plans;  // NOLINT: the shared helpers of these tests

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call

// Host floats <-> device memory of the storage type.
inline void Upload(const std::vector<float>& host, Storage storage, void* device) {
  if (storage == Storage::kFloat32) {
    ASSERT_CUDA(cudaMemcpy(device, host.data(), host.size() * 4, cudaMemcpyHostToDevice));
    return;
  }
  std::vector<uint16_t> halves(host.size());
  for (size_t i = 0; i < host.size(); ++i) halves[i] = FloatToHalf(host[i]);
  ASSERT_CUDA(cudaMemcpy(device, halves.data(), halves.size() * 2, cudaMemcpyHostToDevice));
}

inline void Download(const void* device, Storage storage, std::vector<float>& host) {
  if (storage == Storage::kFloat32) {
    ASSERT_CUDA(cudaMemcpy(host.data(), device, host.size() * 4, cudaMemcpyDeviceToHost));
    return;
  }
  std::vector<uint16_t> halves(host.size());
  ASSERT_CUDA(cudaMemcpy(halves.data(), device, halves.size() * 2, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < host.size(); ++i) host[i] = HalfToFloat(halves[i]);
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr, bytes < 16 ? 16 : bytes) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

inline bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace testing_gpu
}  // namespace lipsync
