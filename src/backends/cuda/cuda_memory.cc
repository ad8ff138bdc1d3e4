#include "backends/cuda/cuda_memory.h"

namespace lipsync::cuda {

std::string CudaErrorText(cudaError_t e) {
  return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
}

Status CudaCheck(cudaError_t e, const char* call, const std::string& during) {
  if (e == cudaSuccess) return Status::Ok();
  const std::string message =
      "CUDA backend: " + std::string(call) + " failed while " + during + ": " + CudaErrorText(e);
  if (e == cudaErrorMemoryAllocation) return ResourceExhausted(message);
  return Internal(message);
}

std::string MiB(size_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

Result<DeviceMemory> AllocateDevice(size_t bytes, const std::string& what) {
  void* p = nullptr;
  LIPSYNC_RETURN_IF_ERROR(
      CudaCheck(cudaMalloc(&p, bytes), "cudaMalloc", "allocating " + MiB(bytes) + " for " + what));
  return DeviceMemory(p);
}

Result<PinnedMemory> AllocatePinned(size_t bytes, const std::string& what) {
  void* p = nullptr;
  LIPSYNC_RETURN_IF_ERROR(CudaCheck(cudaHostAlloc(&p, bytes, cudaHostAllocDefault), "cudaHostAlloc",
                                    "allocating " + MiB(bytes) + " of pinned memory for " + what));
  return PinnedMemory(p);
}

ArenaPool& DevicePool(int device) {
  return DeviceArenaPool(device, [device] {
    // The calling thread's current device is left as it was.
    const auto on_device = [device](const auto& call) {
      int current = -1;
      cudaGetDevice(&current);
      if (current != device) cudaSetDevice(device);
      const cudaError_t e = call();
      if (current >= 0 && current != device) cudaSetDevice(current);
      if (e != cudaSuccess) cudaGetLastError();  // not sticky: the next call must not see it
      return e == cudaSuccess;
    };
    ArenaAllocator allocator;
    allocator.allocate = [on_device](size_t bytes) -> void* {
      void* p = nullptr;
      return on_device([&] { return cudaMalloc(&p, bytes); }) ? p : nullptr;
    };
    allocator.free = [on_device](void* p) { on_device([&] { return cudaFree(p); }); };
    return allocator;
  });
}

}  // namespace lipsync::cuda
