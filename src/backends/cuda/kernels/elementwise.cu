#include "backends/cuda/kernels/elementwise.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    Elementwise(const T* a, const T* b, int64_t vectors, Act act, T* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float x[V];
    LoadVec<T, V>(a + i * V, x);
    if (b) {
      float y[V];
      LoadVec<T, V>(b + i * V, y);
#pragma unroll
      for (int e = 0; e < V; ++e) x[e] += y[e];
    }
#pragma unroll
    for (int e = 0; e < V; ++e) x[e] = Activate(x[e], act);
    StoreVec<T, V>(out + i * V, x);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchElementwise(const T* a, const T* b, int64_t count, Act act, T* out,
                              cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  if (count % kV == 0 && Aligned16(a) && Aligned16(out) && (b == nullptr || Aligned16(b))) {
    const int64_t vectors = count / kV;
    LIPSYNC_LAUNCH(GridFor(vectors, kThreads), kThreads, 0, stream, Elementwise<T, kV>)
    (a, b, vectors, act, out);
  } else {
    LIPSYNC_LAUNCH(GridFor(count, kThreads), kThreads, 0, stream, Elementwise<T, 1>)
    (a, b, count, act, out);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchElementwise<float>(const float*, const float*, int64_t, Act, float*,
                                              cudaStream_t);
template cudaError_t LaunchElementwise<__half>(const __half*, const __half*, int64_t, Act, __half*,
                                               cudaStream_t);

}  // namespace lipsync::cuda
