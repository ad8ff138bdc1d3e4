#include "backends/cuda/kernels/depthwise_conv.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

struct DwShape {
  int batch, h, w, c, oh, ow, kh, kw, stride_h, stride_w, pad_top, pad_left;
};

// One thread per V adjacent channels of one output pixel; neighbouring threads take neighbouring
// channels, so every input and weight access of a warp is contiguous, and each thread moves its V
// channels with one 4-, 8- or 16-byte access.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    DepthwiseConv(DwShape s, ConvTensors<T> t, Act act, int64_t work) {
  const int groups_per_pixel = s.c / V;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % groups_per_pixel) * V;
    int64_t pixel = idx / groups_per_pixel;
    const int ox = static_cast<int>(pixel % s.ow);
    const int oy = static_cast<int>((pixel / s.ow) % s.oh);
    const int64_t n = pixel / (static_cast<int64_t>(s.ow) * s.oh);
    float acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = 0.0f;
    const T* image = t.in + n * s.h * s.w * s.c;
    for (int ky = 0; ky < s.kh; ++ky) {
      const int iy = oy * s.stride_h - s.pad_top + ky;
      if (iy < 0 || iy >= s.h) continue;
      for (int kx = 0; kx < s.kw; ++kx) {
        const int ix = ox * s.stride_w - s.pad_left + kx;
        if (ix < 0 || ix >= s.w) continue;
        float x[V], w[V];
        LoadAligned<T, V>(image + (static_cast<int64_t>(iy) * s.w + ix) * s.c + c, x);
        LoadAligned<T, V>(t.weight + (ky * s.kw + kx) * s.c + c, w);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] = fmaf(x[e], w[e], acc[e]);
      }
    }
    float b[V];
    LoadAligned<T, V>(t.bias + c, b);
    const int64_t at = pixel * s.c + c;
    if (t.residual) {
      float r[V];
      LoadAligned<T, V>(t.residual + at, r);
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += r[e];
    }
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = Activate(acc[e] + b[e], act);
    StoreAligned<T, V>(t.out + at, acc);
  }
}

// The model's case, 3x3 with stride 1 or 2: each thread computes kStrip horizontally adjacent
// output pixels of its V channels, so every loaded input column serves up to three of them and
// each weight row is loaded once per strip; 32-bit index arithmetic (the caller checks that the
// work fits). Same summation order as DepthwiseConv, so the results are identical.
constexpr int kStrip = 4;

template <typename T, int V, int kStride>
__global__ void __launch_bounds__(kThreads)
    Depthwise3x3(DwShape s, ConvTensors<T> t, Act act, int work) {
  constexpr int kCols = (kStrip - 1) * kStride + 3;
  const int groups = s.c / V;
  const int strips = (s.ow + kStrip - 1) / kStrip;
  for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < work; idx += gridDim.x * blockDim.x) {
    const int c = (idx % groups) * V;
    int rest = idx / groups;
    const int ox0 = (rest % strips) * kStrip;
    rest /= strips;
    const int oy = rest % s.oh;
    const int n = rest / s.oh;
    float acc[kStrip][V];
#pragma unroll
    for (int p = 0; p < kStrip; ++p) {
#pragma unroll
      for (int e = 0; e < V; ++e) acc[p][e] = 0.0f;
    }
    const T* image = t.in + static_cast<int64_t>(n) * s.h * s.w * s.c;
    const int ix0 = ox0 * kStride - s.pad_left;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = oy * kStride - s.pad_top + ky;
      if (iy < 0 || iy >= s.h) continue;
      float w[3][V];
#pragma unroll
      for (int kx = 0; kx < 3; ++kx) LoadAligned<T, V>(t.weight + (ky * 3 + kx) * s.c + c, w[kx]);
      const T* row = image + static_cast<int64_t>(iy) * s.w * s.c + c;
#pragma unroll
      for (int col = 0; col < kCols; ++col) {
        const int ix = ix0 + col;
        if (ix < 0 || ix >= s.w) continue;
        float x[V];
        LoadAligned<T, V>(row + ix * s.c, x);
#pragma unroll
        for (int p = 0; p < kStrip; ++p) {
          const int kx = col - p * kStride;
          if (kx < 0 || kx >= 3) continue;
#pragma unroll
          for (int e = 0; e < V; ++e) acc[p][e] = fmaf(x[e], w[kx][e], acc[p][e]);
        }
      }
    }
    float b[V];
    LoadAligned<T, V>(t.bias + c, b);
#pragma unroll
    for (int p = 0; p < kStrip; ++p) {
      const int ox = ox0 + p;
      if (ox >= s.ow) break;
      const int64_t at = ((static_cast<int64_t>(n) * s.oh + oy) * s.ow + ox) * s.c + c;
      if (t.residual) {
        float r[V];
        LoadAligned<T, V>(t.residual + at, r);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[p][e] += r[e];
      }
#pragma unroll
      for (int e = 0; e < V; ++e) acc[p][e] = Activate(acc[p][e] + b[e], act);
      StoreAligned<T, V>(t.out + at, acc[p]);
    }
  }
}

template <typename T, int V>
void Launch(const DwShape& s, const ConvTensors<T>& t, Act act, cudaStream_t stream) {
  const bool is3x3 =
      s.kh == 3 && s.kw == 3 && s.stride_h == s.stride_w && (s.stride_h == 1 || s.stride_h == 2);
  const int64_t strips = (s.ow + kStrip - 1) / kStrip;
  const int64_t strip_work = static_cast<int64_t>(s.batch) * s.oh * strips * (s.c / V);
  if (is3x3 && strip_work < (int64_t{1} << 30) &&
      static_cast<int64_t>(s.w) * s.c < (int64_t{1} << 30)) {
    const int work = static_cast<int>(strip_work);
    if (s.stride_h == 1) {
      LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, Depthwise3x3<T, V, 1>)
      (s, t, act, work);
    } else {
      LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, Depthwise3x3<T, V, 2>)
      (s, t, act, work);
    }
    return;
  }
  const int64_t work = static_cast<int64_t>(s.batch) * s.oh * s.ow * (s.c / V);
  LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, DepthwiseConv<T, V>)
  (s, t, act, work);
}

}  // namespace

template <typename T>
cudaError_t LaunchDepthwiseConv(const ConvGeometry& g, const ConvTensors<T>& t, Act act,
                                cudaStream_t stream) {
  if (g.cin != g.cout || g.groups != g.cin) return cudaErrorInvalidValue;
  const DwShape s{static_cast<int>(g.batch),
                  static_cast<int>(g.h),
                  static_cast<int>(g.w),
                  static_cast<int>(g.cin),
                  static_cast<int>(g.oh),
                  static_cast<int>(g.ow),
                  g.kh,
                  g.kw,
                  g.stride_h,
                  g.stride_w,
                  g.pad_top,
                  g.pad_left};
  if (static_cast<int64_t>(s.batch) * s.oh * s.ow * s.c == 0) return cudaSuccess;
  // The widest vector of channels that divides C and that every pointer is aligned for: 16 bytes
  // for most layers, 8 or 4 for channel counts such as 12, 20 or 6 (the first block has 12).
  const auto fits = [&](int v) {
    const size_t bytes = static_cast<size_t>(v) * sizeof(T);
    return s.c % v == 0 && AlignedTo(t.in, bytes) && AlignedTo(t.weight, bytes) &&
           AlignedTo(t.bias, bytes) && AlignedTo(t.out, bytes) &&
           (t.residual == nullptr || AlignedTo(t.residual, bytes));
  };
  constexpr int kV = kVec16<T>;
  if (fits(kV)) {
    Launch<T, kV>(s, t, act, stream);
  } else if (fits(kV / 2)) {
    Launch<T, kV / 2>(s, t, act, stream);
  } else if (fits(kV / 4)) {
    Launch<T, kV / 4>(s, t, act, stream);
  } else {
    Launch<T, 1>(s, t, act, stream);
  }
  return cudaGetLastError();
}

template cudaError_t LaunchDepthwiseConv<float>(const ConvGeometry&, const ConvTensors<float>&, Act,
                                                cudaStream_t);
template cudaError_t LaunchDepthwiseConv<__half>(const ConvGeometry&, const ConvTensors<__half>&,
                                                 Act, cudaStream_t);

}  // namespace lipsync::cuda
