#include "backends/cuda/kernels/resize_concat.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per V output channels of one pixel.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads) ResizeConcat(ConcatParts<T> parts, ResizeSpec r, int h,
                                                         int w, int c_out, T* out, int64_t work) {
  const int vecs_per_pixel = c_out / V;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % vecs_per_pixel) * V;
    const int64_t pixel = idx / vecs_per_pixel;
    const int x = static_cast<int>(pixel % w);
    const int y = static_cast<int>((pixel / w) % h);
    const int64_t n = pixel / (static_cast<int64_t>(w) * h);
    int part = 0, first = 0;
    while (part + 1 < parts.count && c >= first + parts.channels[part]) {
      first += parts.channels[part];
      ++part;
    }
    const int cp = parts.channels[part];
    float v[V];
    if (part == 0 && r.resize) {
      ResizedVec<T, V>(parts.src[0], cp, r, n, y, x, c - first, v);
    } else {
      LoadVec<T, V>(parts.src[part] + pixel * cp + (c - first), v);
    }
    StoreVec<T, V>(out + pixel * c_out + c, v);
  }
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) Pad(const T* in, int in_h, int in_w, PadSpec pad,
                                                int out_h, int out_w, int c, T* out, int64_t work) {
  const int vecs_per_pixel = c / V;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int ch = static_cast<int>(idx % vecs_per_pixel) * V;
    const int64_t pixel = idx / vecs_per_pixel;
    const int x = static_cast<int>(pixel % out_w);
    const int y = static_cast<int>((pixel / out_w) % out_h);
    const int64_t n = pixel / (static_cast<int64_t>(out_w) * out_h);
    const int iy = y - pad.top, ix = x - pad.left;
    float v[V];
    if (iy < 0 || iy >= in_h || ix < 0 || ix >= in_w) {
#pragma unroll
      for (int e = 0; e < V; ++e) v[e] = pad.value;
    } else {
      LoadVec<T, V>(in + ((n * in_h + iy) * in_w + ix) * c + ch, v);
    }
    StoreVec<T, V>(out + pixel * c + ch, v);
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchResizeConcat(const ConcatParts<T>& parts, const ResizeSpec& resize, int64_t batch,
                               int h, int w, T* out, cudaStream_t stream) {
  if (parts.count < 1 || parts.count > kMaxConcatParts) return cudaErrorInvalidValue;
  int c_out = 0;
  constexpr int kV = kVec16<T>;
  bool vec = Aligned16(out);
  for (int i = 0; i < parts.count; ++i) {
    c_out += parts.channels[i];
    vec = vec && parts.channels[i] % kV == 0 && Aligned16(parts.src[i]);
  }
  const int64_t pixels = batch * h * w;
  if (pixels == 0 || c_out == 0) return cudaSuccess;
  if (vec) {
    const int64_t work = pixels * (c_out / kV);
    LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, ResizeConcat<T, kV>)
    (parts, resize, h, w, c_out, out, work);
  } else {
    const int64_t work = pixels * c_out;
    LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, ResizeConcat<T, 1>)
    (parts, resize, h, w, c_out, out, work);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchPad(const T* in, int in_h, int in_w, const PadSpec& pad, int64_t batch, int out_h,
                      int out_w, int c, T* out, cudaStream_t stream) {
  const int64_t pixels = batch * out_h * out_w;
  if (pixels == 0 || c == 0) return cudaSuccess;
  constexpr int kV = kVec16<T>;
  if (c % kV == 0 && Aligned16(in) && Aligned16(out)) {
    const int64_t work = pixels * (c / kV);
    LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, Pad<T, kV>)
    (in, in_h, in_w, pad, out_h, out_w, c, out, work);
  } else {
    const int64_t work = pixels * c;
    LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, Pad<T, 1>)
    (in, in_h, in_w, pad, out_h, out_w, c, out, work);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchResizeConcat<float>(const ConcatParts<float>&, const ResizeSpec&,
                                               int64_t, int, int, float*, cudaStream_t);
template cudaError_t LaunchResizeConcat<__half>(const ConcatParts<__half>&, const ResizeSpec&,
                                                int64_t, int, int, __half*, cudaStream_t);
template cudaError_t LaunchPad<float>(const float*, int, int, const PadSpec&, int64_t, int, int,
                                      int, float*, cudaStream_t);
template cudaError_t LaunchPad<__half>(const __half*, int, int, const PadSpec&, int64_t, int, int,
                                       int, __half*, cudaStream_t);

}  // namespace lipsync::cuda
