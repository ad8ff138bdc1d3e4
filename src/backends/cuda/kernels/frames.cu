#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/kernels/frames.cuh"
#include "lipsync/face_values.h"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per pixel: three byte loads, six stores side by side.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    FacesToVisual(const uint8_t* faces, FaceGeometry g, int64_t work, T* visual) {
  const int64_t pixels = static_cast<int64_t>(g.size) * g.size;
  const int64_t source_pixels = static_cast<int64_t>(g.source_size) * g.source_size;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = idx / pixels;
    const int p = static_cast<int>(idx % pixels);
    const int y = p / g.size, x = p % g.size;
    const uint8_t* src =
        faces +
        (n * source_pixels + static_cast<int64_t>(y + g.offset) * g.source_size + x + g.offset) * 3;
    const bool masked =
        x >= g.mask_x && x < g.mask_x + g.mask_w && y >= g.mask_y && y < g.mask_y + g.mask_h;
    T* dst = visual + idx * 6;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const float v = VisualValue(src[c]);  // a correctly rounded division, as on the CPU
      dst[c] = FromFloat<T>(v);
      dst[3 + c] = FromFloat<T>(masked ? 0.0f : v);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    OutputToBytes(const T* nhwc, int64_t count, uint8_t* bytes) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    bytes[i] = OutputByte(ToFloat(nhwc[i]));  // the CPU backends' cast, NaN included
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchFacesToVisual(const uint8_t* faces, int64_t batch, const FaceGeometry& g,
                                T* visual, cudaStream_t stream) {
  const int64_t work = batch * g.size * g.size;
  if (work == 0) return cudaSuccess;
  LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, FacesToVisual<T>)
  (faces, g, work, visual);
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchOutputToBytes(const T* nhwc, int64_t count, uint8_t* bytes, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  LIPSYNC_LAUNCH(GridFor(count, kThreads), kThreads, 0, stream, OutputToBytes<T>)
  (nhwc, count, bytes);
  return cudaGetLastError();
}

template cudaError_t LaunchFacesToVisual<float>(const uint8_t*, int64_t, const FaceGeometry&,
                                                float*, cudaStream_t);
template cudaError_t LaunchFacesToVisual<__half>(const uint8_t*, int64_t, const FaceGeometry&,
                                                 __half*, cudaStream_t);
template cudaError_t LaunchOutputToBytes<float>(const float*, int64_t, uint8_t*, cudaStream_t);
template cudaError_t LaunchOutputToBytes<__half>(const __half*, int64_t, uint8_t*, cudaStream_t);

}  // namespace lipsync::cuda
