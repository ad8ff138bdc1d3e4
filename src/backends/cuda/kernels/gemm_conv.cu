#include <mma.h>

#include "backends/cuda/kernels/gemm_conv.cuh"

namespace lipsync::cuda {
namespace {

namespace wmma = nvcuda::wmma;

template <typename T>
struct GemmParams {
  const T* in;
  const T* weight;  // [N][K]
  const T* bias;    // [N]
  const T* residual;
  T* out;
  int m, n, k;  // M pixels, N output channels, K reduction length
  // Gather geometry (implicit im2col).
  int h, w, cin, oh, ow, kw, stride_h, stride_w, pad_top, pad_left;
  Act act;
  bool vec_epilogue;  // out/residual/bias rows can be written with 16-byte vectors
};

// One output pixel (a row of A) as far as it is independent of k.
struct Row {
  int64_t base;  // element offset of the pixel (1x1) or of its image (im2col)
  int iy0, ix0;  // top-left input position of its window (im2col)
  bool valid;    // m < M
};

template <bool kIm2col, typename T>
__device__ __forceinline__ Row MakeRow(const GemmParams<T>& p, int m) {
  Row r{0, 0, 0, m < p.m};
  if (!r.valid) return r;
  if constexpr (!kIm2col) {
    r.base = static_cast<int64_t>(m) * p.k;
  } else {
    const int ox = m % p.ow;
    const int t = m / p.ow;
    const int oy = t % p.oh;
    const int n = t / p.oh;
    r.base = static_cast<int64_t>(n) * p.h * p.w * p.cin;
    r.iy0 = oy * p.stride_h - p.pad_top;
    r.ix0 = ox * p.stride_w - p.pad_left;
  }
  return r;
}

// Address of A(row, k), or null where A reads as zero (past K, past M, or in the padding).
template <bool kIm2col, typename T>
__device__ __forceinline__ const T* APtr(const GemmParams<T>& p, const Row& r, int k) {
  if (!r.valid || k >= p.k) return nullptr;
  if constexpr (!kIm2col) {
    return p.in + r.base + k;
  } else {
    const int tap = k / p.cin;
    const int ci = k - tap * p.cin;
    const int ky = tap / p.kw;
    const int kx = tap - ky * p.kw;
    const int iy = r.iy0 + ky, ix = r.ix0 + kx;
    if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) return nullptr;
    return p.in + r.base + (static_cast<int64_t>(iy) * p.w + ix) * p.cin + ci;
  }
}

template <typename T>
__device__ __forceinline__ const T* BPtr(const GemmParams<T>& p, int n, int k) {
  return (n < p.n && k < p.k) ? p.weight + static_cast<int64_t>(n) * p.k + k : nullptr;
}

// Bias, residual and activation for V outputs of row m starting at channel n.
template <typename T, int V>
__device__ __forceinline__ void FinishVec(const GemmParams<T>& p, int m, int n, float (&v)[V]) {
  float b[V];
  LoadVec<T, V>(p.bias + n, b);
  const int64_t at = static_cast<int64_t>(m) * p.n + n;
  if (p.residual) {
    float r[V];
    LoadVec<T, V>(p.residual + at, r);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] += r[i];
  }
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = Activate(v[i] + b[i], p.act);
  StoreVec<T, V>(p.out + at, v);
}

template <typename T>
__device__ __forceinline__ void FinishOne(const GemmParams<T>& p, int m, int n, float v) {
  const int64_t at = static_cast<int64_t>(m) * p.n + n;
  v += ToFloat(p.bias[n]);
  if (p.residual) v += ToFloat(p.residual[at]);
  p.out[at] = FromFloat<T>(Activate(v, p.act));
}

// ---------------------------------------------------------------------------------------------
// half: tensor cores. Block tile 128 x BN x 32, 8 warps as 4 (M) x 2 (N), each warp 32 x BN/2.
constexpr int kHalfBM = 128;
constexpr int kHalfBK = 32;
constexpr int kHalfThreads = 256;
constexpr int kHalfLds = kHalfBK + 8;  // +16 bytes per row: fewer bank conflicts, rows stay aligned

// The A and B tiles during the K loop, the float output tile after it.
template <int kBN>
struct HalfSmem {
  static constexpr int kTiles = (kHalfBM + kBN) * kHalfLds * 2;
  static constexpr int kOutput = kHalfBM * (kBN + 4) * 4;
  static constexpr int kBytes = kTiles > kOutput ? kTiles : kOutput;
};

template <bool kIm2col, bool kVec, int kBN>
__global__ void __launch_bounds__(kHalfThreads) GemmConvHalf(GemmParams<__half> p) {
  constexpr int kLdc = kBN + 4;
  constexpr int kV = kVec ? 8 : 1;
  constexpr int kChunksPerRow = kHalfBK / kV;
  constexpr int kAPerThread = kHalfBM * kChunksPerRow / kHalfThreads;
  constexpr int kBChunks = kBN * kChunksPerRow;  // fewer than the threads for BN 32 with vectors
  constexpr int kBPerThread = (kBChunks + kHalfThreads - 1) / kHalfThreads;
  constexpr int kWarpN = kBN / 2;       // columns per warp
  constexpr int kFragsN = kWarpN / 16;  // 16-wide fragments per warp along N
  __shared__ __align__(128) unsigned char smem[HalfSmem<kBN>::kBytes];
  __half* as = reinterpret_cast<__half*>(smem);
  __half* bs = as + kHalfBM * kHalfLds;
  float* cs = reinterpret_cast<float*>(smem);  // reused for the epilogue after the K loop

  const int tid = threadIdx.x;
  const int m0 = blockIdx.x * kHalfBM;
  const int n0 = blockIdx.y * kBN;
  const int warp = tid / 32;
  const int warp_m = warp % 4, warp_n = warp / 4;

  Row rows[kAPerThread];
#pragma unroll
  for (int i = 0; i < kAPerThread; ++i) {
    rows[i] = MakeRow<kIm2col>(p, m0 + (tid + i * kHalfThreads) / kChunksPerRow);
  }

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][kFragsN];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }

  for (int k0 = 0; k0 < p.k; k0 += kHalfBK) {
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int idx = tid + i * kHalfThreads;
      const int r = idx / kChunksPerRow, c = (idx % kChunksPerRow) * kV;
      const __half* src = APtr<kIm2col>(p, rows[i], k0 + c);
      __half* dst = as + r * kHalfLds + c;
      if constexpr (kVec) {
        *reinterpret_cast<uint4*>(dst) =
            src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
      } else {
        *dst = src ? *src : __float2half_rn(0.0f);
      }
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int idx = tid + i * kHalfThreads;
      if (kBChunks % kHalfThreads != 0 && idx >= kBChunks) break;
      const int r = idx / kChunksPerRow, c = (idx % kChunksPerRow) * kV;
      const __half* src = BPtr(p, n0 + r, k0 + c);
      __half* dst = bs + r * kHalfLds + c;
      if constexpr (kVec) {
        *reinterpret_cast<uint4*>(dst) =
            src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0, 0, 0, 0);
      } else {
        *dst = src ? *src : __float2half_rn(0.0f);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kHalfBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[kFragsN];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(a[i], as + (warp_m * 32 + i * 16) * kHalfLds + kk, kHalfLds);
      }
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        wmma::load_matrix_sync(b[j], bs + (warp_n * kWarpN + j * 16) * kHalfLds + kk, kHalfLds);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      wmma::store_matrix_sync(cs + (warp_m * 32 + i * 16) * kLdc + warp_n * kWarpN + j * 16,
                              acc[i][j], kLdc, wmma::mem_row_major);
    }
  }
  __syncthreads();

  if (p.vec_epilogue) {
    constexpr int kOutV = 8;
    for (int idx = tid; idx < kHalfBM * kBN / kOutV; idx += kHalfThreads) {
      const int r = idx / (kBN / kOutV), c = (idx % (kBN / kOutV)) * kOutV;
      const int m = m0 + r, n = n0 + c;
      if (m >= p.m || n >= p.n) continue;  // N % 8 == 0 here: the vector is all in or all out
      float v[kOutV];
#pragma unroll
      for (int e = 0; e < kOutV; ++e) v[e] = cs[r * kLdc + c + e];
      FinishVec<__half, kOutV>(p, m, n, v);
    }
  } else {
    for (int idx = tid; idx < kHalfBM * kBN; idx += kHalfThreads) {
      const int r = idx / kBN, c = idx % kBN;
      const int m = m0 + r, n = n0 + c;
      if (m < p.m && n < p.n) FinishOne(p, m, n, cs[r * kLdc + c]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// float: 64 x 64 x 16 block tile, 256 threads, 4 x 4 outputs per thread.
constexpr int kFloatBM = 64;
constexpr int kFloatBN = 64;
constexpr int kFloatBK = 16;
constexpr int kFloatThreads = 256;

template <bool kIm2col, bool kVec>
__global__ void __launch_bounds__(kFloatThreads) GemmConvFloat(GemmParams<float> p) {
  // Transposed tiles ([k][m], [k][n]) so that a thread reads its 4 rows / 4 columns as a float4.
  __shared__ __align__(16) float as[kFloatBK][kFloatBM + 4];
  __shared__ __align__(16) float bs[kFloatBK][kFloatBN + 4];
  constexpr int kV = kVec ? 4 : 1;
  constexpr int kChunksPerRow = kFloatBK / kV;
  constexpr int kAPerThread = kFloatBM * kChunksPerRow / kFloatThreads;
  constexpr int kBPerThread = kFloatBN * kChunksPerRow / kFloatThreads;

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.x * kFloatBM;
  const int n0 = blockIdx.y * kFloatBN;

  Row rows[kAPerThread];
#pragma unroll
  for (int i = 0; i < kAPerThread; ++i) {
    rows[i] = MakeRow<kIm2col>(p, m0 + (tid + i * kFloatThreads) / kChunksPerRow);
  }
  float acc[4][4] = {};

  for (int k0 = 0; k0 < p.k; k0 += kFloatBK) {
#pragma unroll
    for (int i = 0; i < kAPerThread; ++i) {
      const int idx = tid + i * kFloatThreads;
      const int r = idx / kChunksPerRow, c = (idx % kChunksPerRow) * kV;
      const float* src = APtr<kIm2col>(p, rows[i], k0 + c);
      float v[kV];
      if (src) {
        LoadVec<float, kV>(src, v);
      } else {
#pragma unroll
        for (int e = 0; e < kV; ++e) v[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < kV; ++e) as[c + e][r] = v[e];
    }
#pragma unroll
    for (int i = 0; i < kBPerThread; ++i) {
      const int idx = tid + i * kFloatThreads;
      const int r = idx / kChunksPerRow, c = (idx % kChunksPerRow) * kV;
      const float* src = BPtr(p, n0 + r, k0 + c);
      float v[kV];
      if (src) {
        LoadVec<float, kV>(src, v);
      } else {
#pragma unroll
        for (int e = 0; e < kV; ++e) v[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < kV; ++e) bs[c + e][r] = v[e];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kFloatBK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&as[k][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&bs[k][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }

  const int n = n0 + tx * 4;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= p.m || n >= p.n) continue;
    if (p.vec_epilogue) {  // N % 4 == 0: all four columns exist
      FinishVec<float, 4>(p, m, n, acc[i]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (n + j < p.n) FinishOne(p, m, n + j, acc[i][j]);
      }
    }
  }
}

template <typename T>
GemmParams<T> MakeParams(const ConvGeometry& g, const ConvTensors<T>& t, Act act) {
  GemmParams<T> p{};
  p.in = t.in;
  p.weight = t.weight;
  p.bias = t.bias;
  p.residual = t.residual;
  p.out = t.out;
  p.m = static_cast<int>(g.batch * g.oh * g.ow);
  p.n = static_cast<int>(g.cout);
  p.k = static_cast<int>(g.kh * g.kw * g.cin);
  p.h = static_cast<int>(g.h);
  p.w = static_cast<int>(g.w);
  p.cin = static_cast<int>(g.cin);
  p.oh = static_cast<int>(g.oh);
  p.ow = static_cast<int>(g.ow);
  p.kw = g.kw;
  p.stride_h = g.stride_h;
  p.stride_w = g.stride_w;
  p.pad_top = g.pad_top;
  p.pad_left = g.pad_left;
  p.act = act;
  constexpr int kV = kVec16<T>;
  p.vec_epilogue = p.n % kV == 0 && Aligned16(t.out) && Aligned16(t.bias) &&
                   (t.residual == nullptr || Aligned16(t.residual));
  return p;
}

bool IsPointwise(const ConvGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_top == 0 &&
         g.pad_left == 0 && g.oh == g.h && g.ow == g.w;
}

// Vector loads need every A and B chunk to lie inside one pixel's channels and be aligned.
template <typename T>
bool CanVectorLoad(const ConvGeometry& g, const ConvTensors<T>& t) {
  constexpr int kV = kVec16<T>;
  return g.cin % kV == 0 && Aligned16(t.in) && Aligned16(t.weight);
}

template <bool kIm2col, bool kVec, int kBN>
void LaunchHalf(const GemmParams<__half>& p, cudaStream_t stream) {
  const dim3 grid((p.m + kHalfBM - 1) / kHalfBM, (p.n + kBN - 1) / kBN);
  LIPSYNC_LAUNCH(grid, kHalfThreads, 0, stream, GemmConvHalf<kIm2col, kVec, kBN>)(p);
}

template <bool kIm2col, bool kVec>
void LaunchFloat(const GemmParams<float>& p, cudaStream_t stream) {
  const dim3 grid((p.m + kFloatBM - 1) / kFloatBM, (p.n + kFloatBN - 1) / kFloatBN);
  LIPSYNC_LAUNCH(grid, kFloatThreads, 0, stream, GemmConvFloat<kIm2col, kVec>)(p);
}

}  // namespace

template <>
cudaError_t LaunchGemmConv<__half>(const ConvGeometry& g, const ConvTensors<__half>& t, Act act,
                                   cudaStream_t stream) {
  if (g.groups != 1) return cudaErrorInvalidValue;
  const GemmParams<__half> p = MakeParams(g, t, act);
  if (p.m == 0 || p.n == 0) return cudaSuccess;
  const bool vec = CanVectorLoad(g, t);
  if (IsPointwise(g)) {
    // Narrow outputs (the 16-, 32- and 3-channel layers at full resolution) waste less of a
    // 32-wide tile.
    if (p.n <= 32) {
      vec ? LaunchHalf<false, true, 32>(p, stream) : LaunchHalf<false, false, 32>(p, stream);
    } else {
      vec ? LaunchHalf<false, true, 64>(p, stream) : LaunchHalf<false, false, 64>(p, stream);
    }
  } else {
    vec ? LaunchHalf<true, true, 64>(p, stream) : LaunchHalf<true, false, 64>(p, stream);
  }
  return cudaGetLastError();
}

template <>
cudaError_t LaunchGemmConv<float>(const ConvGeometry& g, const ConvTensors<float>& t, Act act,
                                  cudaStream_t stream) {
  if (g.groups != 1) return cudaErrorInvalidValue;
  const GemmParams<float> p = MakeParams(g, t, act);
  if (p.m == 0 || p.n == 0) return cudaSuccess;
  const bool vec = CanVectorLoad(g, t);
  if (IsPointwise(g)) {
    vec ? LaunchFloat<false, true>(p, stream) : LaunchFloat<false, false>(p, stream);
  } else {
    vec ? LaunchFloat<true, true>(p, stream) : LaunchFloat<true, false>(p, stream);
  }
  return cudaGetLastError();
}

}  // namespace lipsync::cuda
