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
  cudaErrorUnknown = 999,
};
using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;
using cudaGraph_t = struct CUgraph_st*;
using cudaGraphExec_t = struct CUgraphExec_st*;
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1
};
constexpr unsigned int cudaStreamNonBlocking = 1;
constexpr unsigned int cudaEventDisableTiming = 2;
constexpr unsigned int cudaHostAllocDefault = 0;
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  size_t sharedMemPerBlockOptin;
};
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
// Runs `work` now, or records it in the graph its stream is capturing (cpu_runtime.cc).
void Enqueue(cudaStream_t stream, std::function<void()> work);
unsigned char* DynamicShared();

// The warp-wide and asynchronous instructions the kernels use (backends/cuda/kernels/mma.cuh):
// mma.sync.m16n8k16 with float16 inputs and float accumulators, and cp.async of 16 bytes, which
// lands at the thread's next WaitCopies.
void MmaM16N8K16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
float ShuffleDown(float value, unsigned int delta);
// wmma::mma_sync: d = a b + c on 16x16 tiles, each thread holding 8 elements of each (mma.h).
void WmmaProduct(float* d, const float* a, const float* b, const float* c);
// A WMMA load or store by this thread (what: 'a', 'b' or 'c'): the GPU requires every thread of the
// warp to give the same address, stride and layout; the device checks it at the warp's next
// wmma::mma_sync and at the block's end.
void NoteWmmaAccess(char what, const void* address, unsigned int stride, bool row_major);
unsigned int LaneId();  // the thread's place in its warp
void CopyAsync16(void* shared_dst, const void* src, bool valid);
void WaitCopies();

// kernel<<<grid, block, shared, stream>>>(args...) as LIPSYNC_LAUNCH(...)(args...).
template <typename... Params>
class Launch {
 public:
  Launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared, cudaStream_t stream)
      : kernel_(kernel), grid_(grid), block_(block), shared_(shared), stream_(stream) {}
  template <typename... Args>
  void operator()(Args&&... args) const {
    // The arguments are kept by value, as a launch (and a graph that records it) keeps them.
    Enqueue(stream_, [kernel = kernel_, grid = grid_, block = block_, shared = shared_,
                      ... kept = Params(std::forward<Args>(args))] {
      auto body = [&] { kernel(kept...); };  // each thread copies them again, as on the GPU
      RunGrid(reinterpret_cast<const void*>(kernel), grid, block, shared, body);
    });
  }

 private:
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t shared_;
  cudaStream_t stream_;
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

// Memory: device memory is host memory. Work runs when it is enqueued (below), so synchronizing
// waits for nothing and returns a launch's failure, as a fault stays on a GPU's context.
cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);

// Devices, streams, events and graphs (cpu_runtime.cc): one device; work runs when it is
// enqueued, in the order it is enqueued, unless its stream is capturing a graph, which records it
// (with the streams that join the capture through an event) and runs it at each launch.
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaMallocAsync(void** ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaHostAlloc(void** ptr, size_t bytes, unsigned int flags);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

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
