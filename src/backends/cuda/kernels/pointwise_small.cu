#include "backends/cuda/kernels/mma.cuh"
#include "backends/cuda/kernels/pointwise_small.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 16;  // pixels per block: one mma row block
constexpr int kCols = 64;  // outputs per block
constexpr int kNt = kCols / 8;
constexpr int kLd = kCols + 4;  // floats per row of a partial sum

// 32 bits (two halves) at p, or zero where the element pair lies outside the matrix.
__device__ __forceinline__ uint32_t WordOrZero(const __half* p, bool inside) {
  return inside ? *reinterpret_cast<const uint32_t*>(p) : 0u;
}

__global__ void __launch_bounds__(kThreads) PointwiseSplitK(SmallPointwise p) {
  __shared__ float partial[kWarps][kRows][kLd];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t = lane & 3;
  const int m0 = blockIdx.x * kRows, n0 = blockIdx.y * kCols;
  const int r0 = m0 + g, r1 = m0 + g + 8;
  const bool in0 = r0 < p.m, in1 = r1 < p.m;
  const __half* a0 = p.in + static_cast<int64_t>(in0 ? r0 : 0) * p.k + 2 * t;
  const __half* a1 = p.in + static_cast<int64_t>(in1 ? r1 : 0) * p.k + 2 * t;
  const __half* b[kNt];
  bool bn[kNt];
#pragma unroll
  for (int nt = 0; nt < kNt; ++nt) {
    const int row = n0 + nt * 8 + g;
    bn[nt] = row < p.n;
    b[nt] = p.weight + static_cast<int64_t>(bn[nt] ? row : 0) * p.k + 2 * t;
  }
  float acc[kNt][4];
#pragma unroll
  for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
  }
  // Warp w sums the input channels [16 s, 16 s + 16) for s = w, w + 8, ...
  for (int k0 = warp * 16; k0 < p.k; k0 += kWarps * 16) {
    const uint32_t a[4] = {WordOrZero(a0 + k0, in0), WordOrZero(a1 + k0, in1),
                           WordOrZero(a0 + k0 + 8, in0), WordOrZero(a1 + k0 + 8, in1)};
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
      const uint32_t bf[2] = {WordOrZero(b[nt] + k0, bn[nt]), WordOrZero(b[nt] + k0 + 8, bn[nt])};
      Mma(acc[nt], a, bf);
    }
  }
#pragma unroll
  for (int nt = 0; nt < kNt; ++nt) {
    const int c = nt * 8 + 2 * t;
    partial[warp][g][c] = acc[nt][0];
    partial[warp][g][c + 1] = acc[nt][1];
    partial[warp][g + 8][c] = acc[nt][2];
    partial[warp][g + 8][c + 1] = acc[nt][3];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kRows * kCols; i += kThreads) {
    const int r = i / kCols, c = i % kCols;
    const int m = m0 + r, n = n0 + c;
    if (m >= p.m || n >= p.n) continue;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) v += partial[w][r][c];
    const int64_t at = static_cast<int64_t>(m) * p.n + n;
    if (p.residual) v += __half2float(p.residual[at]);
    p.out[at] = __float2half_rn(Activate(v + __half2float(p.bias[n]), p.act));
  }
}

}  // namespace

bool SmallPointwiseSupports(int64_t m, int64_t n, int64_t k) {
  return m > 0 && n > 0 && k >= 16 && k % 16 == 0 && n % 2 == 0 &&
         (m + kRows - 1) / kRows < 0x7fffffff && (n + kCols - 1) / kCols < 65535;
}

cudaError_t LaunchSmallPointwise(const SmallPointwise& p, cudaStream_t stream) {
  if (!SmallPointwiseSupports(p.m, p.n, p.k) || !p.in || !p.weight || !p.bias || !p.out ||
      (reinterpret_cast<uintptr_t>(p.in) & 3) || (reinterpret_cast<uintptr_t>(p.weight) & 3)) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid((p.m + kRows - 1) / kRows, (p.n + kCols - 1) / kCols);
  LIPSYNC_LAUNCH(grid, kThreads, 0, stream, PointwiseSplitK)(p);
  return cudaGetLastError();
}

}  // namespace lipsync::cuda
