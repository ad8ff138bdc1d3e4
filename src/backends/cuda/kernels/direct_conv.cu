#include "backends/cuda/kernels/direct_conv.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    DirectConv(ConvGeometry g, ConvTensors<T> t, Act act, int64_t work) {
  const int64_t cig = g.cin / g.groups, cog = g.cout / g.groups;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < work;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t co = idx % g.cout;
    const int64_t pixel = idx / g.cout;
    const int64_t ox = pixel % g.ow;
    const int64_t oy = (pixel / g.ow) % g.oh;
    const int64_t n = pixel / (g.ow * g.oh);
    const int64_t first_ci = (co / cog) * cig;
    float acc = 0.0f;
    for (int ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.stride_h - g.pad_top + ky;
      if (iy < 0 || iy >= g.h) continue;
      for (int kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = ox * g.stride_w - g.pad_left + kx;
        if (ix < 0 || ix >= g.w) continue;
        const T* x = t.in + ((n * g.h + iy) * g.w + ix) * g.cin + first_ci;
        const T* w = t.weight + ((co * g.kh + ky) * g.kw + kx) * cig;
        for (int64_t ci = 0; ci < cig; ++ci) acc = fmaf(ToFloat(x[ci]), ToFloat(w[ci]), acc);
      }
    }
    acc += ToFloat(t.bias[co]);
    if (t.residual) acc += ToFloat(t.residual[idx]);
    t.out[idx] = FromFloat<T>(Activate(acc, act));
  }
}

}  // namespace

template <typename T>
cudaError_t LaunchDirectConv(const ConvGeometry& g, const ConvTensors<T>& t, Act act,
                             cudaStream_t stream) {
  if (g.groups < 1 || g.cin % g.groups != 0 || g.cout % g.groups != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t work = g.batch * g.oh * g.ow * g.cout;
  if (work == 0) return cudaSuccess;
  LIPSYNC_LAUNCH(GridFor(work, kThreads), kThreads, 0, stream, DirectConv<T>)(g, t, act, work);
  return cudaGetLastError();
}

template cudaError_t LaunchDirectConv<float>(const ConvGeometry&, const ConvTensors<float>&, Act,
                                             cudaStream_t);
template cudaError_t LaunchDirectConv<__half>(const ConvGeometry&, const ConvTensors<__half>&, Act,
                                              cudaStream_t);

}  // namespace lipsync::cuda
