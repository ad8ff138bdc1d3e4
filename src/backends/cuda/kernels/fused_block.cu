#include "backends/cuda/kernels/fused_block.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;

// Output tile edge by depthwise stride: the input tile (with halo) is (tile - 1) * stride + 3.
__host__ __device__ constexpr int TileFor(int stride) { return stride == 1 ? 8 : 4; }
__host__ __device__ constexpr int InputEdge(int tile, int stride) {
  return (tile - 1) * stride + 3;
}

// Three phases over shared memory, each a loop of the block's threads over (pixel, channel) with
// the channel fastest, so neighbouring threads read neighbouring elements:
//   x tile [P][cin]  ->  expanded [P][hidden] (zero outside the image: the depthwise padding)
//                    ->  depthwise [TILE*TILE][hidden]  ->  output pixels [TILE*TILE][cout].
// Intermediates are rounded to T as the unfused steps store them.
template <typename T, int kStride>
__global__ void __launch_bounds__(kThreads)
    FusedBlock(FusedBlockGeometry g, FusedBlockTensors<T> t, Act act) {
  constexpr int kTile = TileFor(kStride);
  constexpr int kEdge = InputEdge(kTile, kStride);
  constexpr int kInPixels = kEdge * kEdge;
  constexpr int kOutPixels = kTile * kTile;
  LIPSYNC_DYNAMIC_SHARED(shared_raw);
  T* xs = reinterpret_cast<T*>(shared_raw);
  T* es = xs + kInPixels * g.cin;
  T* ds = es + kInPixels * g.hidden;

  const int tiles_x = (g.ow + kTile - 1) / kTile;
  const int tiles_y = (g.oh + kTile - 1) / kTile;
  const int tile = blockIdx.x;
  const int n = tile / (tiles_x * tiles_y);
  const int ty = (tile / tiles_x) % tiles_y, tx = tile % tiles_x;
  const int oy0 = ty * kTile, ox0 = tx * kTile;
  const int iy0 = oy0 * kStride - g.pad_top, ix0 = ox0 * kStride - g.pad_left;
  const T* image = t.in + static_cast<int64_t>(n) * g.h * g.w * g.cin;
  const auto inside = [&](int p) {
    const int iy = iy0 + p / kEdge, ix = ix0 + p % kEdge;
    return iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
  };

  for (int i = threadIdx.x; i < kInPixels * g.cin; i += blockDim.x) {
    const int p = i / g.cin, c = i - p * g.cin;
    const int iy = iy0 + p / kEdge, ix = ix0 + p % kEdge;
    xs[i] =
        inside(p) ? image[(static_cast<int64_t>(iy) * g.w + ix) * g.cin + c] : FromFloat<T>(0.0f);
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kInPixels * g.hidden; i += blockDim.x) {
    const int p = i / g.hidden, j = i - p * g.hidden;
    float acc = 0.0f;
    if (inside(p)) {
      acc = ToFloat(t.expand_bias[j]);
      const T* x = xs + p * g.cin;
      const T* wr = t.expand_weight + static_cast<int64_t>(j) * g.cin;
      for (int c = 0; c < g.cin; ++c) acc = fmaf(ToFloat(x[c]), ToFloat(wr[c]), acc);
      acc = Activate(acc, Act::kRelu);
    }
    es[i] = FromFloat<T>(acc);
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kOutPixels * g.hidden; i += blockDim.x) {
    const int q = i / g.hidden, j = i - q * g.hidden;
    const int qy = q / kTile, qx = q % kTile;
    float acc = ToFloat(t.depthwise_bias[j]);
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
      for (int kx = 0; kx < 3; ++kx) {
        const int p = (qy * kStride + ky) * kEdge + qx * kStride + kx;
        acc = fmaf(ToFloat(es[p * g.hidden + j]),
                   ToFloat(t.depthwise_weight[(ky * 3 + kx) * g.hidden + j]), acc);
      }
    }
    ds[i] = FromFloat<T>(Activate(acc, Act::kRelu));
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kOutPixels * g.cout; i += blockDim.x) {
    const int q = i / g.cout, o = i - q * g.cout;
    const int oy = oy0 + q / kTile, ox = ox0 + q % kTile;
    if (oy >= g.oh || ox >= g.ow) continue;
    float acc = ToFloat(t.project_bias[o]);
    const T* d = ds + q * g.hidden;
    const T* wr = t.project_weight + static_cast<int64_t>(o) * g.hidden;
    for (int j = 0; j < g.hidden; ++j) acc = fmaf(ToFloat(d[j]), ToFloat(wr[j]), acc);
    const int64_t at = ((static_cast<int64_t>(n) * g.oh + oy) * g.ow + ox) * g.cout + o;
    if (t.residual) acc += ToFloat(t.residual[at]);
    t.out[at] = FromFloat<T>(Activate(acc, act));
  }
}

template <typename T, int kStride>
cudaError_t Launch(const FusedBlockGeometry& g, const FusedBlockTensors<T>& t, Act act,
                   cudaStream_t stream) {
  constexpr int kTile = TileFor(kStride);
  const size_t shared = FusedBlockSharedBytes(g, sizeof(T));
  if (shared > kMaxFusedBlockSharedBytes) return cudaErrorInvalidValue;
  const int64_t blocks =
      static_cast<int64_t>(g.batch) * ((g.oh + kTile - 1) / kTile) * ((g.ow + kTile - 1) / kTile);
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  LIPSYNC_LAUNCH(static_cast<unsigned int>(blocks), kThreads, shared, stream,
                 FusedBlock<T, kStride>)
  (g, t, act);
  return cudaGetLastError();
}

}  // namespace

size_t FusedBlockSharedBytes(const FusedBlockGeometry& g, size_t element_size) {
  if (g.stride != 1 && g.stride != 2) return ~size_t{0};
  const int tile = TileFor(g.stride);
  const int edge = InputEdge(tile, g.stride);
  const size_t elements = static_cast<size_t>(edge) * edge * (g.cin + g.hidden) +
                          static_cast<size_t>(tile) * tile * g.hidden;
  return elements * element_size;
}

cudaError_t PrepareFusedBlockKernels() {
  const int bytes = static_cast<int>(kMaxFusedBlockSharedBytes);
  const auto attribute = cudaFuncAttributeMaxDynamicSharedMemorySize;
  cudaError_t e = cudaFuncSetAttribute(FusedBlock<float, 1>, attribute, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(FusedBlock<float, 2>, attribute, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(FusedBlock<__half, 1>, attribute, bytes);
  if (e == cudaSuccess) e = cudaFuncSetAttribute(FusedBlock<__half, 2>, attribute, bytes);
  return e;
}

template <typename T>
cudaError_t LaunchFusedBlock(const FusedBlockGeometry& g, const FusedBlockTensors<T>& t, Act act,
                             cudaStream_t stream) {
  if (g.stride == 1) return Launch<T, 1>(g, t, act, stream);
  if (g.stride == 2) return Launch<T, 2>(g, t, act, stream);
  return cudaErrorInvalidValue;
}

template cudaError_t LaunchFusedBlock<float>(const FusedBlockGeometry&,
                                             const FusedBlockTensors<float>&, Act, cudaStream_t);
template cudaError_t LaunchFusedBlock<__half>(const FusedBlockGeometry&,
                                              const FusedBlockTensors<__half>&, Act, cudaStream_t);

}  // namespace lipsync::cuda
