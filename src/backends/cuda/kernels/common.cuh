// Helpers shared by the CUDA kernels: storage-type conversions, vector loads and stores, the
// activation functions of the plan's epilogues, and launch-size arithmetic.
//
// Activations are stored as T (float, or half with float arithmetic); every kernel accumulates in
// float. Vector helpers move V contiguous elements with one 16-byte access when V * sizeof(T) is
// 16, which needs the address to be 16-byte aligned: callers pick V > 1 only when every pointer
// and row stride involved is a multiple of V elements.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

// A launch and a kernel's dynamic shared memory, spelled so that the kernels compile as C++ for
// the CPU device of the tests too (tests/cuda_on_cpu, LIPSYNC_CUDA_ON_CPU):
// kernel<<<grid, block, shared, stream>>>(args) is
// LIPSYNC_LAUNCH(grid, block, shared, stream, kernel)(args) (the kernel last: its template
// arguments may hold commas).
#ifdef LIPSYNC_CUDA_ON_CPU
#define LIPSYNC_LAUNCH(grid, block, shared, stream, ...) \
  ::lipsync::cuda_on_cpu::Launch(__VA_ARGS__, grid, block, shared, stream)
#define LIPSYNC_DYNAMIC_SHARED(name) unsigned char* name = ::lipsync::cuda_on_cpu::DynamicShared()
#else
#define LIPSYNC_LAUNCH(grid, block, shared, stream, ...) \
  __VA_ARGS__<<<grid, block, shared, stream>>>
#define LIPSYNC_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace lipsync::cuda {

// Mirrors graph::Activation; kept separate so that kernels do not depend on the plan.
enum class Act : int { kNone = 0, kRelu = 1, kSigmoid = 2 };

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

__device__ __forceinline__ float Activate(float v, Act act) {
  switch (act) {
    case Act::kRelu:
      return v > 0.0f ? v : 0.0f;
    case Act::kSigmoid:
      return 1.0f / (1.0f + __expf(-v));
    case Act::kNone:
      break;
  }
  return v;
}

// V contiguous elements of T as floats.
template <typename T, int V>
__device__ __forceinline__ void LoadVec(const T* p, float (&out)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = ToFloat(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = ToFloat(p[i]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void StoreVec(T* p, const float (&in)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) e[i] = FromFloat<T>(in[i]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = FromFloat<T>(in[i]);
  }
}

// V contiguous elements with one access of V * sizeof(T) bytes when that is 4, 8 or 16, which
// needs the address aligned to it (see AlignedTo); element by element otherwise. For channel
// counts that are not a multiple of a 16-byte vector (12, 20, 6, ...).
template <int Bytes>
struct Word;
template <>
struct Word<16> {
  using type = uint4;
};
template <>
struct Word<8> {
  using type = uint2;
};
template <>
struct Word<4> {
  using type = uint32_t;
};

template <typename T, int V>
__device__ __forceinline__ void LoadAligned(const T* p, float (&out)[V]) {
  constexpr int kBytes = V * static_cast<int>(sizeof(T));
  if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
    const typename Word<kBytes>::type raw =
        *reinterpret_cast<const typename Word<kBytes>::type*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = ToFloat(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = ToFloat(p[i]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void StoreAligned(T* p, const float (&in)[V]) {
  constexpr int kBytes = V * static_cast<int>(sizeof(T));
  if constexpr (kBytes == 16 || kBytes == 8 || kBytes == 4) {
    typename Word<kBytes>::type raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < V; ++i) e[i] = FromFloat<T>(in[i]);
    *reinterpret_cast<typename Word<kBytes>::type*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = FromFloat<T>(in[i]);
  }
}

inline bool AlignedTo(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

// Elements per 16-byte vector: 4 floats or 8 halves.
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU several times over
// without launching millions of blocks for the largest tensors.
inline unsigned int GridFor(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  constexpr int64_t kMaxBlocks = 65535LL * 8;
  return static_cast<unsigned int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

}  // namespace lipsync::cuda
