#include "backends/cuda/kernels/layout.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per pixel: for each channel, neighbouring threads read neighbouring NCHW floats,
// and each thread writes its pixel's channels contiguously.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    NchwToNhwc(const float* in, int c, int64_t pixels, int64_t work, T* out) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / pixels, p = idx % pixels;
    const float* src = in + n * c * pixels + p;
    T* dst = out + idx * c;
    for (int ch = 0; ch < c; ++ch) dst[ch] = FromFloat<T>(src[ch * pixels]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    NhwcToNchw(const T* in, int c, int64_t pixels, int64_t work, Act act, float* out) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / pixels, p = idx % pixels;
    const T* src = in + idx * c;
    float* dst = out + n * c * pixels + p;
    for (int ch = 0; ch < c; ++ch) dst[ch * pixels] = Activate(ToFloat(src[ch]), act);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchNchwToNhwc(const float* in, int64_t batch, int c, int64_t pixels, T* out,
                             cudaStream_t stream) {
  const int64_t work = batch * pixels;
  if (work == 0 || c == 0) return cudaSuccess;
  LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, NchwToNhwc<T>)
  (in, c, pixels, work, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchNhwcToNchw(const T* in, int64_t batch, int c, int64_t pixels, Act act, float* out,
                             cudaStream_t stream) {
  const int64_t work = batch * pixels;
  if (work == 0 || c == 0) return cudaSuccess;
  LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, NhwcToNchw<T>)
  (in, c, pixels, work, act, out);
  return cudaGetLastError();
}

template cudaError_t LaunchNchwToNhwc<float>(const float*, int64_t, int, int64_t, float*,
                                             cudaStream_t);
template cudaError_t LaunchNchwToNhwc<__half>(const float*, int64_t, int, int64_t, __half*,
                                              cudaStream_t);
template cudaError_t LaunchNhwcToNchw<float>(const float*, int64_t, int, int64_t, Act, float*,
                                             cudaStream_t);
template cudaError_t LaunchNhwcToNchw<__half>(const __half*, int64_t, int, int64_t, Act, float*,
                                              cudaStream_t);

}  // namespace lipsync::cuda
