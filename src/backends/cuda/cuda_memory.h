// The CUDA backend's memory and errors: a failed runtime call as a Status, device and pinned host
// allocations that free themselves, and the device's working-memory pool (core/arena_pool.h) over
// cudaMalloc.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>

#include "core/arena_pool.h"
#include "lipsync/status.h"

namespace lipsync::cuda {

// "message (name)" of a CUDA error.
std::string CudaErrorText(cudaError_t e);
// A failed CUDA call as a Status naming the call and what the backend was doing `during` it:
// kResourceExhausted for want of memory, else kInternal.
Status CudaCheck(cudaError_t e, const char* call, const std::string& during);
// Bytes rounded up to whole MiB, for messages.
std::string MiB(size_t bytes);

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
struct PinnedFree {
  void operator()(void* p) const { cudaFreeHost(p); }
};
using DeviceMemory = std::unique_ptr<void, DeviceFree>;
using PinnedMemory = std::unique_ptr<void, PinnedFree>;

// `bytes` on the current device, or in pinned host memory; `what` names them in the error.
Result<DeviceMemory> AllocateDevice(size_t bytes, const std::string& what);
Result<PinnedMemory> AllocatePinned(size_t bytes, const std::string& what);

// The device's working-memory pool, allocating with cudaMalloc on that device. Not
// cudaMallocAsync: an arena outlives the streams that use it (each engine's contexts have their
// own, and it passes between them), and the graphs captured over it need its address to stay.
ArenaPool& DevicePool(int device);

}  // namespace lipsync::cuda
