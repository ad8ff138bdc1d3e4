#include <cstdint>

#include "backends/cuda/kernels/ir_block_tc.cuh"
#include "backends/cuda/kernels/mma.cuh"

namespace lipsync::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;  // expanded channels per pass through the three stages
constexpr int kPad = 8;     // halves added to every shared row: 16 bytes, no bank conflicts

__host__ __device__ constexpr int RoundUp(int v, int m) { return (v + m - 1) / m * m; }

// The halo tile of an output tile: rows, columns, pixels, pixels rounded up to 16 (mma rows).
__host__ __device__ constexpr int HaloRows(int tile_h, int stride) {
  return (tile_h - 1) * stride + 3;
}
__host__ __device__ constexpr int HaloPixels(int tile_h, int tile_w, int stride) {
  return HaloRows(tile_h, stride) * HaloRows(tile_w, stride);
}

// Shared memory of one block, in bytes from the start; every region starts 16-byte aligned.
struct Layout {
  int cinp, hidp, coutp, mhp, p;                 // padded sizes
  int xs_ld, es_ld, ds_ld, we_ld, wp_ld, ts_ld;  // row strides in halves
  int we, wp, wd, be, bd, bp, wt, bt, xs, es, ds, ts, bytes;
};

__host__ __device__ inline Layout MakeLayout(const IrTcGeometry& g, int tile_h, int tile_w) {
  Layout l{};
  l.cinp = RoundUp(g.cin, 16);
  l.hidp = RoundUp(g.hidden, kChunk);
  l.coutp = RoundUp(g.cout, 16);
  l.mhp = RoundUp(HaloPixels(tile_h, tile_w, g.stride), 16);
  l.p = tile_h * tile_w;
  l.xs_ld = l.cinp + kPad;
  l.es_ld = kChunk + kPad;
  l.ds_ld = kChunk + kPad;
  l.we_ld = l.cinp + kPad;
  l.wp_ld = l.hidp + kPad;
  l.ts_ld = l.coutp + kPad;
  int at = 0;
  const auto take = [&at](int bytes) {
    const int start = at;
    at += RoundUp(bytes, 16);
    return start;
  };
  l.we = take(l.hidp * l.we_ld * 2);
  l.wp = take(l.coutp * l.wp_ld * 2);
  l.wd = take(9 * l.hidp * 4);
  l.be = take(l.hidp * 4);
  l.bd = take(l.hidp * 4);
  l.bp = take(l.coutp * 4);
  const bool tail = g.tail_cout > 0;
  l.wt = take(tail ? kIrMaxTailCout * l.coutp * 4 : 0);
  l.bt = take(tail ? kIrMaxTailCout * 4 : 0);
  l.xs = take(l.mhp * l.xs_ld * 2);
  l.es = take(l.mhp * l.es_ld * 2);
  l.ds = take(l.p * l.ds_ld * 2);
  l.ts = take(tail ? l.p * l.ts_ld * 2 : 0);
  l.bytes = at;
  return l;
}

struct Params {
  IrTcGeometry g;
  IrTcTensors t;
  int tiles;       // tiles of the whole batch
  bool vec_input;  // the input (or both concat parts) can be read 8 channels at a time
};

// 32 bits: two halves at consecutive columns, the lower column in the low half (mma.cuh).
__device__ __forceinline__ uint32_t Word(const __half* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// A fragment from rows [0,16) x columns [0,16) of a row-major half array with row stride ld.
__device__ __forceinline__ void LoadA(const __half* p, int ld, int lane, uint32_t (&a)[4]) {
  const int g = lane >> 2, t = lane & 3;
  a[0] = Word(p + g * ld + 2 * t);
  a[1] = Word(p + (g + 8) * ld + 2 * t);
  a[2] = Word(p + g * ld + 2 * t + 8);
  a[3] = Word(p + (g + 8) * ld + 2 * t + 8);
}

// B fragment from rows [0,8) (n) x columns [0,16) (k) of an [n][k] half array with row stride ld.
__device__ __forceinline__ void LoadB(const __half* p, int ld, int lane, uint32_t (&b)[2]) {
  const int g = lane >> 2, t = lane & 3;
  b[0] = Word(p + g * ld + 2 * t);
  b[1] = Word(p + g * ld + 2 * t + 8);
}

__device__ __forceinline__ void StoreHalf2(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}

// Weights and biases into shared memory, zero in the padding (so padded channels add nothing).
__device__ void StageWeights(const Params& q, const Layout& l, unsigned char* smem) {
  const IrTcGeometry& g = q.g;
  const IrTcTensors& t = q.t;
  __half* we = reinterpret_cast<__half*>(smem + l.we);
  __half* wp = reinterpret_cast<__half*>(smem + l.wp);
  float* wd = reinterpret_cast<float*>(smem + l.wd);
  float* be = reinterpret_cast<float*>(smem + l.be);
  float* bd = reinterpret_cast<float*>(smem + l.bd);
  float* bp = reinterpret_cast<float*>(smem + l.bp);
  const __half zero = __float2half_rn(0.0f);
  for (int i = threadIdx.x; i < l.hidp * l.cinp; i += kThreads) {
    const int j = i / l.cinp, k = i % l.cinp;
    we[j * l.we_ld + k] = j < g.hidden && k < g.cin ? t.expand_weight[j * g.cin + k] : zero;
  }
  for (int i = threadIdx.x; i < l.coutp * l.hidp; i += kThreads) {
    const int o = i / l.hidp, j = i % l.hidp;
    wp[o * l.wp_ld + j] = o < g.cout && j < g.hidden ? t.project_weight[o * g.hidden + j] : zero;
  }
  for (int i = threadIdx.x; i < 9 * l.hidp; i += kThreads) {
    const int tap = i / l.hidp, j = i % l.hidp;
    wd[i] = j < g.hidden ? __half2float(t.dw_weight[tap * g.hidden + j]) : 0.0f;
  }
  for (int j = threadIdx.x; j < l.hidp; j += kThreads) {
    be[j] = j < g.hidden ? __half2float(t.expand_bias[j]) : 0.0f;
    bd[j] = j < g.hidden ? __half2float(t.dw_bias[j]) : 0.0f;
  }
  for (int o = threadIdx.x; o < l.coutp; o += kThreads) {
    bp[o] = o < g.cout ? __half2float(t.project_bias[o]) : 0.0f;
  }
  if (g.tail_cout > 0) {
    float* wt = reinterpret_cast<float*>(smem + l.wt);
    float* bt = reinterpret_cast<float*>(smem + l.bt);
    for (int i = threadIdx.x; i < kIrMaxTailCout * l.coutp; i += kThreads) {
      const int o = i / l.coutp, c = i % l.coutp;
      wt[i] = o < g.tail_cout && c < g.cout ? __half2float(t.tail_weight[o * g.cout + c]) : 0.0f;
    }
    for (int o = threadIdx.x; o < kIrMaxTailCout; o += kThreads) {
      bt[o] = o < g.tail_cout ? __half2float(t.tail_bias[o]) : 0.0f;
    }
  }
}

// The input tile with its halo: row p of xs is halo pixel (iy0 + p / kIw, ix0 + p % kIw);
// rows past the halo, pixels outside the image and channels past cin are zero.
template <int kIw, int kMh>
__device__ void LoadInputTile(const Params& q, const Layout& l, __half* xs, int n, int iy0,
                              int ix0) {
  const IrTcGeometry& g = q.g;
  const IrTcTensors& t = q.t;
  // Element offset of halo pixel p's first channel in an image with `c` channels, or -1 where
  // the tile reads zeros.
  const auto pixel = [&](int p, int c) -> int64_t {
    const int iy = iy0 + p / kIw, ix = ix0 + p % kIw;
    if (p >= kMh || iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return -1;
    return ((static_cast<int64_t>(n) * g.h + iy) * g.w + ix) * c;
  };
  const auto row = [&](int p) { return iy0 + p / kIw; };
  const auto col = [&](int p) { return ix0 + p % kIw; };
  if (t.concat.enabled) {
    const IrConcatSource& s = t.concat;
    if (q.vec_input) {
      const int chunks = l.cinp / 8;
      for (int i = threadIdx.x; i < l.mhp * chunks; i += kThreads) {
        const int p = i / chunks, c = (i % chunks) * 8;
        float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const int64_t at = pixel(p, s.c1);
        if (at >= 0 && c < g.cin) {
          if (c < s.c0) {
            ResizedVec<__half, 8>(s.part0, s.c0, s.resize, n, row(p), col(p), c, v);
          } else {
            LoadVec<__half, 8>(s.part1 + at + c - s.c0, v);
          }
        }
        StoreVec<__half, 8>(xs + p * l.xs_ld + c, v);
      }
    } else {
      for (int i = threadIdx.x; i < l.mhp * l.cinp; i += kThreads) {
        const int p = i / l.cinp, c = i % l.cinp;
        float v[1] = {0.0f};
        const int64_t at = pixel(p, s.c1);
        if (at >= 0 && c < g.cin) {
          if (c < s.c0) {
            ResizedVec<__half, 1>(s.part0, s.c0, s.resize, n, row(p), col(p), c, v);
          } else {
            v[0] = __half2float(s.part1[at + c - s.c0]);
          }
        }
        xs[p * l.xs_ld + c] = __float2half_rn(v[0]);
      }
    }
    return;
  }
  if (q.vec_input) {
    const int chunks = l.cinp / 8;
    for (int i = threadIdx.x; i < l.mhp * chunks; i += kThreads) {
      const int p = i / chunks, c = (i % chunks) * 8;
      const int64_t at = pixel(p, g.cin);
      const bool valid = at >= 0 && c < g.cin;
      CopyAsync16(xs + p * l.xs_ld + c, valid ? t.in + at + c : t.in, valid);
    }
    WaitCopies();
  } else {
    for (int i = threadIdx.x; i < l.mhp * l.cinp; i += kThreads) {
      const int p = i / l.cinp, c = i % l.cinp;
      const int64_t at = pixel(p, g.cin);
      xs[p * l.xs_ld + c] = at >= 0 && c < g.cin ? t.in[at + c] : __float2half_rn(0.0f);
    }
  }
}

// Two blocks per multiprocessor (so one loads its tile while the other computes) where the
// registers allow it without spilling (ptxas -v: 128 registers); the 16x16 tile with 64 outputs
// needs more and runs one.
__host__ __device__ constexpr int MinBlocks(int pixels, int coutp) {
  return pixels >= 256 && coutp >= 64 ? 1 : 2;
}

template <int kStride, int kTh, int kTw, int kCoutP>
__global__ void __launch_bounds__(kThreads, MinBlocks(kTh* kTw, kCoutP)) IrBlockTc(Params q) {
  constexpr int kIh = HaloRows(kTh, kStride), kIw = HaloRows(kTw, kStride);
  constexpr int kMh = kIh * kIw;
  constexpr int kMhp = RoundUp(kMh, 16);
  constexpr int kP = kTh * kTw;
  static_assert(kP % 16 == 0, "the output tile must be whole 16-row mma tiles");
  // Stage A: each warp takes 16-row blocks of the halo tile, all 32 channels of the chunk, with
  // the chunk's expand weights held in registers (kKs k-steps of 16 input channels at most).
  constexpr int kKs = kIrMaxCin / 16;
  constexpr int kAnt = kChunk / 8;  // n8 tiles per chunk
  // Stage B: a thread computes kStrip neighbouring pixels of one row for two channels, so each
  // loaded column serves up to three of them and its nine weights stay in registers.
  constexpr int kStrip = kP / 16 >= 8 ? 8 : kP / 16;
  static_assert(kTw % kStrip == 0, "strips must tile the rows");
  constexpr int kStrips = kP / kStrip;
  constexpr int kCols = (kStrip - 1) * kStride + 3;
  // Stage C: each warp takes 16-pixel blocks and all output channels.
  constexpr int kNt = kCoutP / 8;
  constexpr int kMbC = kP / 16;
  constexpr int kCRounds = (kMbC + kWarps - 1) / kWarps;

  const IrTcGeometry& g = q.g;
  const IrTcTensors& t = q.t;
  const Layout l = MakeLayout(g, kTh, kTw);
  LIPSYNC_DYNAMIC_SHARED(smem);
  const __half* we = reinterpret_cast<const __half*>(smem + l.we);
  const __half* wp = reinterpret_cast<const __half*>(smem + l.wp);
  const float* wd = reinterpret_cast<const float*>(smem + l.wd);
  const float* be = reinterpret_cast<const float*>(smem + l.be);
  const float* bd = reinterpret_cast<const float*>(smem + l.bd);
  const float* bp = reinterpret_cast<const float*>(smem + l.bp);
  const float* wt = reinterpret_cast<const float*>(smem + l.wt);
  const float* bt = reinterpret_cast<const float*>(smem + l.bt);
  __half* xs = reinterpret_cast<__half*>(smem + l.xs);
  __half* es = reinterpret_cast<__half*>(smem + l.es);
  __half* ds = reinterpret_cast<__half*>(smem + l.ds);
  __half* ts = reinterpret_cast<__half*>(smem + l.ts);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int lg = lane >> 2, lt = lane & 3;
  const int tiles_x = (g.ow + kTw - 1) / kTw;
  const int tiles_y = (g.oh + kTh - 1) / kTh;
  const int chunks = l.hidp / kChunk;
  const int ksteps = l.cinp / 16;

  StageWeights(q, l, smem);
  // (StageWeights' writes are ordered before any read by the barrier after the first input tile.)

  for (int tile = blockIdx.x; tile < q.tiles; tile += gridDim.x) {
    const int n = tile / (tiles_x * tiles_y);
    const int rest = tile - n * tiles_x * tiles_y;
    const int oy0 = (rest / tiles_x) * kTh, ox0 = (rest % tiles_x) * kTw;
    const int iy0 = oy0 * kStride - g.pad_top, ix0 = ox0 * kStride - g.pad_left;

    // All reads of xs by the previous tile happened before its last stage-A barrier.
    LoadInputTile<kIw, kMh>(q, l, xs, n, iy0, ix0);
    __syncthreads();

    float acc_c[kCRounds][kNt][4];
#pragma unroll
    for (int r = 0; r < kCRounds; ++r) {
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_c[r][nt][e] = 0.0f;
      }
    }

    for (int chunk = 0; chunk < chunks; ++chunk) {
      const int j0 = chunk * kChunk;
      // Stage A: es[halo pixel][chunk channel] = relu(x . we + be), zero outside the image.
      {
        uint32_t bw[kKs][kAnt][2];
#pragma unroll
        for (int ks = 0; ks < kKs; ++ks) {
          if (ks < ksteps) {
#pragma unroll
            for (int nt = 0; nt < kAnt; ++nt) {
              LoadB(we + (j0 + nt * 8) * l.we_ld + ks * 16, l.we_ld, lane, bw[ks][nt]);
            }
          }
        }
        for (int mb = warp; mb < kMhp / 16; mb += kWarps) {
          float acc[kAnt][4];
#pragma unroll
          for (int nt = 0; nt < kAnt; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[nt][e] = 0.0f;
          }
#pragma unroll
          for (int ks = 0; ks < kKs; ++ks) {
            if (ks < ksteps) {
              uint32_t a[4];
              LoadA(xs + mb * 16 * l.xs_ld + ks * 16, l.xs_ld, lane, a);
#pragma unroll
              for (int nt = 0; nt < kAnt; ++nt) Mma(acc[nt], a, bw[ks][nt]);
            }
          }
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const int row = mb * 16 + lg + 8 * hr;
            const int iy = iy0 + row / kIw, ix = ix0 + row % kIw;
            const bool inside = row < kMh && iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
#pragma unroll
            for (int nt = 0; nt < kAnt; ++nt) {
              const int col = nt * 8 + 2 * lt;  // channel within the chunk
              const float v0 = inside ? Activate(acc[nt][2 * hr] + be[j0 + col], Act::kRelu) : 0.0f;
              const float v1 =
                  inside ? Activate(acc[nt][2 * hr + 1] + be[j0 + col + 1], Act::kRelu) : 0.0f;
              StoreHalf2(es + row * l.es_ld + col, v0, v1);
            }
          }
        }
      }
      // es complete; every warp is also past its stage C of the last chunk, so ds may be written.
      __syncthreads();

      // Stage B: ds[pixel][chunk channel] = relu(depthwise 3x3 of es + bd). Same order of
      // additions as the unfused depthwise kernel (rows, then columns; the bias last).
      for (int i = threadIdx.x; i < kStrips * (kChunk / 2); i += kThreads) {
        const int c = (i % (kChunk / 2)) * 2;
        const int strip = i / (kChunk / 2);
        const int py = strip / (kTw / kStrip), px0 = (strip % (kTw / kStrip)) * kStrip;
        float a0[kStrip], a1[kStrip];
#pragma unroll
        for (int p = 0; p < kStrip; ++p) a0[p] = a1[p] = 0.0f;
#pragma unroll
        for (int ky = 0; ky < 3; ++ky) {
          float w0[3], w1[3];
#pragma unroll
          for (int kx = 0; kx < 3; ++kx) {
            const float2 w = *reinterpret_cast<const float2*>(wd + (ky * 3 + kx) * l.hidp + j0 + c);
            w0[kx] = w.x;
            w1[kx] = w.y;
          }
          const __half* src = es + ((py * kStride + ky) * kIw + px0 * kStride) * l.es_ld + c;
#pragma unroll
          for (int col = 0; col < kCols; ++col) {
            const float2 e = __half22float2(*reinterpret_cast<const __half2*>(src + col * l.es_ld));
#pragma unroll
            for (int p = 0; p < kStrip; ++p) {
              const int kx = col - p * kStride;
              if (kx < 0 || kx >= 3) continue;
              a0[p] = fmaf(e.x, w0[kx], a0[p]);
              a1[p] = fmaf(e.y, w1[kx], a1[p]);
            }
          }
        }
#pragma unroll
        for (int p = 0; p < kStrip; ++p) {
          StoreHalf2(ds + (py * kTw + px0 + p) * l.ds_ld + c,
                     Activate(a0[p] + bd[j0 + c], Act::kRelu),
                     Activate(a1[p] + bd[j0 + c + 1], Act::kRelu));
        }
      }
      // ds complete; every warp is past its stage-B reads of es, so the next chunk may write it.
      __syncthreads();

      // Stage C: acc_c[pixels][outputs] += ds . wp over this chunk's channels.
      {
        uint32_t bq[kChunk / 16][kNt][2];
#pragma unroll
        for (int ks = 0; ks < kChunk / 16; ++ks) {
#pragma unroll
          for (int nt = 0; nt < kNt; ++nt) {
            LoadB(wp + nt * 8 * l.wp_ld + j0 + ks * 16, l.wp_ld, lane, bq[ks][nt]);
          }
        }
#pragma unroll
        for (int r = 0; r < kCRounds; ++r) {
          const int mb = warp + r * kWarps;
          if (mb >= kMbC) break;  // the same for the whole warp
#pragma unroll
          for (int ks = 0; ks < kChunk / 16; ++ks) {
            uint32_t a[4];
            LoadA(ds + mb * 16 * l.ds_ld + ks * 16, l.ds_ld, lane, a);
#pragma unroll
            for (int nt = 0; nt < kNt; ++nt) Mma(acc_c[r][nt], a, bq[ks][nt]);
          }
        }
      }
    }

    // Epilogue: bias, residual, activation; the block output to memory and/or the tail's input.
    const bool tail = g.tail_cout > 0;
#pragma unroll
    for (int r = 0; r < kCRounds; ++r) {
      const int mb = warp + r * kWarps;
      if (mb >= kMbC) break;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        const int co = nt * 8 + 2 * lt;
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const int p = mb * 16 + lg + 8 * hr;
          const int oy = oy0 + p / kTw, ox = ox0 + p % kTw;
          if (oy >= g.oh || ox >= g.ow || co >= g.cout) continue;
          const int64_t at = ((static_cast<int64_t>(n) * g.oh + oy) * g.ow + ox) * g.cout + co;
          float v0 = acc_c[r][nt][2 * hr], v1 = acc_c[r][nt][2 * hr + 1];
          if (t.residual) {
            const float2 res = __half22float2(*reinterpret_cast<const __half2*>(t.residual + at));
            v0 += res.x;
            v1 += res.y;
          }
          const __half2 h =
              __floats2half2_rn(Activate(v0 + bp[co], t.act), Activate(v1 + bp[co + 1], t.act));
          if (t.out) *reinterpret_cast<__half2*>(t.out + at) = h;
          if (tail) *reinterpret_cast<__half2*>(ts + p * l.ts_ld + co) = h;
        }
      }
    }
    if (tail) {
      __syncthreads();  // ts complete
      for (int i = threadIdx.x; i < kP * g.tail_cout; i += kThreads) {
        const int p = i / g.tail_cout, o = i % g.tail_cout;
        const int oy = oy0 + p / kTw, ox = ox0 + p % kTw;
        if (oy >= g.oh || ox >= g.ow) continue;
        float acc = 0.0f;
        for (int c = 0; c < g.cout; ++c) {
          acc = fmaf(__half2float(ts[p * l.ts_ld + c]), wt[o * l.coutp + c], acc);
        }
        const int64_t at = ((static_cast<int64_t>(n) * g.oh + oy) * g.ow + ox) * g.tail_cout + o;
        t.tail_out[at] = __float2half_rn(Activate(acc + bt[o], t.tail_act));
      }
      // The next tile writes ts only after three more barriers.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Instantiations: tiles per stride x padded output channels.

constexpr IrTile kStride1Tiles[] = {{8, 16}, {8, 8}, {16, 16}};
constexpr IrTile kStride2Tiles[] = {{8, 8}, {4, 8}, {8, 16}};

using KernelFn = void (*)(Params);

template <int kStride, int kTh, int kTw>
KernelFn ForCout(int coutp) {
  switch (coutp) {
    case 16:
      return IrBlockTc<kStride, kTh, kTw, 16>;
    case 32:
      return IrBlockTc<kStride, kTh, kTw, 32>;
    case 64:
      return IrBlockTc<kStride, kTh, kTw, 64>;
  }
  return nullptr;
}

KernelFn Kernel(int stride, IrTile tile, int coutp) {
  if (stride == 1) {
    if (tile.h == 8 && tile.w == 16) return ForCout<1, 8, 16>(coutp);
    if (tile.h == 8 && tile.w == 8) return ForCout<1, 8, 8>(coutp);
    if (tile.h == 16 && tile.w == 16) return ForCout<1, 16, 16>(coutp);
  } else if (stride == 2) {
    if (tile.h == 8 && tile.w == 8) return ForCout<2, 8, 8>(coutp);
    if (tile.h == 4 && tile.w == 8) return ForCout<2, 4, 8>(coutp);
    if (tile.h == 8 && tile.w == 16) return ForCout<2, 8, 16>(coutp);
  }
  return nullptr;
}

bool Aligned(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0;
}

}  // namespace

const IrTile* IrTilesFor(int stride, int* count) {
  if (stride == 1) {
    *count = static_cast<int>(sizeof(kStride1Tiles) / sizeof(kStride1Tiles[0]));
    return kStride1Tiles;
  }
  if (stride == 2) {
    *count = static_cast<int>(sizeof(kStride2Tiles) / sizeof(kStride2Tiles[0]));
    return kStride2Tiles;
  }
  *count = 0;
  return nullptr;
}

size_t IrTcSharedBytes(const IrTcGeometry& g, IrTile tile) {
  return static_cast<size_t>(MakeLayout(g, tile.h, tile.w).bytes);
}

std::string IrTcUnsupported(const IrTcGeometry& g, IrTile tile, size_t shared_limit) {
  if (g.stride != 1 && g.stride != 2) return "depthwise stride " + std::to_string(g.stride);
  if (g.pad_top < 0 || g.pad_top > 2 || g.pad_left < 0 || g.pad_left > 2) {
    return "depthwise padding outside 0..2";
  }
  if (g.cin < 1 || g.cin > kIrMaxCin) return "input channels " + std::to_string(g.cin);
  if (g.hidden < 1 || g.hidden > kIrMaxHidden)
    return "expanded channels " + std::to_string(g.hidden);
  if (g.cout < 8 || g.cout % 8 != 0 || !Kernel(g.stride, tile, RoundUp(g.cout, 16))) {
    return "output channels " + std::to_string(g.cout) + " or tile " + std::to_string(tile.h) +
           "x" + std::to_string(tile.w);
  }
  if (g.tail_cout < 0 || g.tail_cout > kIrMaxTailCout) {
    return "tail outputs " + std::to_string(g.tail_cout);
  }
  const size_t bytes = IrTcSharedBytes(g, tile);
  if (bytes > shared_limit) {
    return std::to_string(bytes) + " bytes of shared memory (the GPU gives a block " +
           std::to_string(shared_limit) + ")";
  }
  return "";
}

cudaError_t PrepareIrTcKernels(size_t bytes) {
  for (int stride : {1, 2}) {
    int count = 0;
    const IrTile* tiles = IrTilesFor(stride, &count);
    for (int i = 0; i < count; ++i) {
      for (int coutp : {16, 32, 64}) {
        const cudaError_t e = cudaFuncSetAttribute(Kernel(stride, tiles[i], coutp),
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(bytes));
        if (e != cudaSuccess) return e;
      }
    }
  }
  return cudaSuccess;
}

int IrTcBlocksPerSm(const IrTcGeometry& g, IrTile tile) {
  const KernelFn kernel = Kernel(g.stride, tile, RoundUp(g.cout, 16));
  if (!kernel) return 0;
  int blocks = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads,
                                                    IrTcSharedBytes(g, tile)) != cudaSuccess) {
    cudaGetLastError();  // not sticky; leave no error behind for the next launch's check
    return 0;
  }
  return blocks;
}

cudaError_t LaunchIrTc(const IrTcGeometry& g, const IrTcTensors& t, IrTile tile, int max_blocks,
                       cudaStream_t stream) {
  const KernelFn kernel = Kernel(g.stride, tile, RoundUp(g.cout, 16));
  if (!kernel || max_blocks < 1) return cudaErrorInvalidValue;
  if ((g.tail_cout > 0) != (t.tail_out != nullptr) || (!t.out && !t.tail_out)) {
    return cudaErrorInvalidValue;
  }
  Params q;
  q.g = g;
  q.t = t;
  const int64_t tiles = static_cast<int64_t>(g.batch) * ((g.oh + tile.h - 1) / tile.h) *
                        ((g.ow + tile.w - 1) / tile.w);
  if (tiles == 0) return cudaSuccess;
  if (tiles > 0x7fffffff) return cudaErrorInvalidValue;
  q.tiles = static_cast<int>(tiles);
  if (t.concat.enabled) {
    const IrConcatSource& s = t.concat;
    if (s.c0 + s.c1 != g.cin || !s.part0 || !s.part1) return cudaErrorInvalidValue;
    q.vec_input = s.c0 % 8 == 0 && s.c1 % 8 == 0 && Aligned(s.part0, 16) && Aligned(s.part1, 16);
  } else {
    if (!t.in) return cudaErrorInvalidValue;
    q.vec_input = g.cin % 8 == 0 && Aligned(t.in, 16);
  }
  // Two-channel stores need 4-byte aligned rows (cout is a multiple of 8).
  if ((t.out && !Aligned(t.out, 4)) || (t.residual && !Aligned(t.residual, 4))) {
    return cudaErrorInvalidValue;
  }
  const int blocks = static_cast<int>(tiles < max_blocks ? tiles : max_blocks);
  LIPSYNC_LAUNCH(blocks, kThreads, IrTcSharedBytes(g, tile), stream, kernel)(q);
  return cudaGetLastError();
}

}  // namespace lipsync::cuda
