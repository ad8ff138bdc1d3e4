#include "backends/cuda/kernels/small_conv.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPixels = 8;  // output pixels per warp: each weight loaded serves all of them

struct SmallShape {
  int pixels;  // batch * oh * ow
  int h, w, cin, oh, ow, cout, kh, kw, stride_h, stride_w, pad_top, pad_left;
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    SmallImageConv(SmallShape s, ConvTensors<T> t, Act act) {
  const int warp = blockIdx.x * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int groups = (s.pixels + kPixels - 1) / kPixels;
  if (warp >= groups * s.cout) return;
  const int co = warp / groups;
  const int m0 = (warp % groups) * kPixels;
  // Where each pixel's window starts, and its image.
  int iy0[kPixels], ix0[kPixels];
  const T* image[kPixels];
#pragma unroll
  for (int p = 0; p < kPixels; ++p) {
    const int m = min(m0 + p, s.pixels - 1);  // past the end: computed, not stored
    const int ox = m % s.ow, oy = (m / s.ow) % s.oh, n = m / (s.ow * s.oh);
    iy0[p] = oy * s.stride_h - s.pad_top;
    ix0[p] = ox * s.stride_w - s.pad_left;
    image[p] = t.in + static_cast<int64_t>(n) * s.h * s.w * s.cin;
  }
  float acc[kPixels];
#pragma unroll
  for (int p = 0; p < kPixels; ++p) acc[p] = 0.0f;
  const T* weight = t.weight + static_cast<int64_t>(co) * s.kh * s.kw * s.cin;
  for (int ky = 0; ky < s.kh; ++ky) {
    for (int kx = 0; kx < s.kw; ++kx) {
      const T* wt = weight + (ky * s.kw + kx) * s.cin;
      const T* src[kPixels];
#pragma unroll
      for (int p = 0; p < kPixels; ++p) {
        const int iy = iy0[p] + ky, ix = ix0[p] + kx;
        src[p] = (iy >= 0 && iy < s.h && ix >= 0 && ix < s.w)
                     ? image[p] + (static_cast<int64_t>(iy) * s.w + ix) * s.cin
                     : nullptr;
      }
      for (int ci = lane; ci < s.cin; ci += 32) {
        const float wv = ToFloat(wt[ci]);
#pragma unroll
        for (int p = 0; p < kPixels; ++p) {
          if (src[p]) acc[p] = fmaf(ToFloat(src[p][ci]), wv, acc[p]);
        }
      }
    }
  }
#pragma unroll
  for (int p = 0; p < kPixels; ++p) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      acc[p] += __shfl_down_sync(0xffffffffu, acc[p], offset);
    }
  }
  if (lane != 0) return;
  const float bias = ToFloat(t.bias[co]);
#pragma unroll
  for (int p = 0; p < kPixels; ++p) {
    const int m = m0 + p;
    if (m >= s.pixels) break;
    const int64_t at = static_cast<int64_t>(m) * s.cout + co;
    float v = acc[p] + bias;
    if (t.residual) v += ToFloat(t.residual[at]);
    t.out[at] = FromFloat<T>(Activate(v, act));
  }
}

}  // namespace

bool UseSmallImageConv(const ConvGeometry& g) {
  return g.groups == 1 && g.kh * g.kw > 1 && g.cin >= 32 &&
         g.batch * g.oh * g.ow <= kSmallImageMaxPixels;
}

template <typename T>
cudaError_t LaunchSmallImageConv(const ConvGeometry& g, const ConvTensors<T>& t, Act act,
                                 cudaStream_t stream) {
  if (g.groups != 1) return cudaErrorInvalidValue;
  const SmallShape s{static_cast<int>(g.batch * g.oh * g.ow),
                     static_cast<int>(g.h),
                     static_cast<int>(g.w),
                     static_cast<int>(g.cin),
                     static_cast<int>(g.oh),
                     static_cast<int>(g.ow),
                     static_cast<int>(g.cout),
                     g.kh,
                     g.kw,
                     g.stride_h,
                     g.stride_w,
                     g.pad_top,
                     g.pad_left};
  if (s.pixels == 0 || s.cout == 0) return cudaSuccess;
  const int64_t warps = static_cast<int64_t>((s.pixels + kPixels - 1) / kPixels) * s.cout;
  const int64_t blocks = (warps + kWarps - 1) / kWarps;
  LIPSYNC_LAUNCH(static_cast<unsigned int>(blocks), kThreads, 0, stream, SmallImageConv<T>)
  (s, t, act);
  return cudaGetLastError();
}

template cudaError_t LaunchSmallImageConv<float>(const ConvGeometry&, const ConvTensors<float>&,
                                                 Act, cudaStream_t);
template cudaError_t LaunchSmallImageConv<__half>(const ConvGeometry&, const ConvTensors<__half>&,
                                                  Act, cudaStream_t);

}  // namespace lipsync::cuda
