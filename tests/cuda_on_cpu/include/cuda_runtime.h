// Stand-in for the CUDA runtime header when kernels are compiled as C++ and run on the CPU by the
// tests (cpu_device.h): the language's keywords, the built-in thread indices, vector types and the
// few runtime calls the kernels' launchers make. Only what the emulated kernels use is here.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>

#define LIPSYNC_CUDA_ON_CPU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared arrays: the device runs one thread block at a time, so one copy serves them all.
#define __shared__ static

struct uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return uint4{x, y, z, w};
}

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorLaunchFailure = 719,
};
using cudaStream_t = struct CUstream_st*;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

namespace lipsync::cuda_on_cpu {

const uint3& ThreadIdx();
const uint3& BlockIdx();
const dim3& BlockDim();
const dim3& GridDim();
void SyncThreads();
cudaError_t TakeLastError();
cudaError_t SetMaxDynamicShared(const void* kernel, int bytes);
int BlocksPerSm(int threads, size_t dynamic_shared);
cudaError_t RunGrid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared,
                    const std::function<void()>& thread_body);
unsigned char* DynamicShared();

// The warp-wide and asynchronous instructions the kernels use (backends/cuda/kernels/mma.cuh):
// mma.sync.m16n8k16 with float16 inputs and float accumulators, and cp.async of 16 bytes, which
// lands at the thread's next WaitCopies.
void MmaM16N8K16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
float ShuffleDown(float value, unsigned int delta);
// wmma::mma_sync on whole 16x16 tiles, row by row: d = a b + c.
void WmmaProduct(float* d, const float* a, const float* b, const float* c);
void CopyAsync16(void* shared_dst, const void* src, bool valid);
void WaitCopies();

// kernel<<<grid, block, shared, stream>>>(args...) as LIPSYNC_LAUNCH(...)(args...).
template <typename... Params>
class Launch {
 public:
  Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared, cudaStream_t)
      : kernel_(kernel), grid_(grid), block_(block), shared_(shared) {}
  template <typename... Args>
  void operator()(Args&&... args) const {
    auto body = [&] { kernel_(args...); };  // each thread copies the arguments, as on the GPU
    RunGrid(reinterpret_cast<const void*>(kernel_), grid_, block_, shared_, body);
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t shared_;
};

}  // namespace lipsync::cuda_on_cpu

#define threadIdx (::lipsync::cuda_on_cpu::ThreadIdx())
#define blockIdx (::lipsync::cuda_on_cpu::BlockIdx())
#define blockDim (::lipsync::cuda_on_cpu::BlockDim())
#define gridDim (::lipsync::cuda_on_cpu::GridDim())

inline void __syncthreads() { lipsync::cuda_on_cpu::SyncThreads(); }
inline float __expf(float v) { return std::exp(v); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

inline cudaError_t cudaGetLastError() { return lipsync::cuda_on_cpu::TakeLastError(); }
inline float __shfl_down_sync(unsigned int, float value, unsigned int delta) {
  return lipsync::cuda_on_cpu::ShuffleDown(value, delta);
}

// Memory: device memory is host memory; a launch runs to its end before it returns, so
// synchronizing has nothing to wait for.
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);

template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute, int value) {
  return lipsync::cuda_on_cpu::SetMaxDynamicShared(reinterpret_cast<const void*>(kernel), value);
}

template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel*, int threads,
                                                          size_t dynamic_shared) {
  *blocks = lipsync::cuda_on_cpu::BlocksPerSm(threads, dynamic_shared);
  return cudaSuccess;
}
