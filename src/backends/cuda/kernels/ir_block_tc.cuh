// The inverted-residual block on the tensor cores, in float16: expand 1x1 + ReLU, depthwise 3x3 +
// ReLU, project 1x1 (+ residual, + activation) in one kernel whose expanded tensor never leaves
// the chip. Optionally the block's input is built while it is loaded (the UNet's upsample + pad +
// concat, so that step's output is never written), and a small 1x1 convolution after the block
// (the UNet's last layer with its sigmoid) runs in the epilogue.
//
// Each thread block owns an output tile of TH x TW pixels of one image and walks the tiles of
// the whole batch (a persistent grid, so the weights are staged in shared memory once per block):
//   1. the input tile with its halo, ((TH-1)*S+3) x ((TW-1)*S+3) pixels, into shared memory
//      (zero outside the image: the depthwise padding);
//   2. per chunk of 32 expanded channels: expand as an mma.sync m16n8k16 product (float
//      accumulation) into shared memory as half, the depthwise 3x3 on the CUDA cores into shared
//      memory as half, and the projection accumulated in registers;
//   3. the epilogue adds bias and residual, applies the activation and stores half (and feeds the
//      optional tail convolution).
// Intermediates are rounded to half as the unfused steps store them, and each stage adds its
// bias in the same order as the unfused kernels, so results match them to float16 rounding.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/kernels/fused_block.cuh"
#include "backends/cuda/kernels/resize_concat.cuh"

namespace lipsync::cuda {

// Output tile of one thread block.
struct IrTile {
  int h = 8, w = 16;
};

// The block's shapes as the CUDA-core fused kernel has them (h, w, cin: the concatenation when it
// is built on the fly), plus the tail.
struct IrTcGeometry : FusedBlockGeometry {
  int tail_cout = 0;  // outputs of the tail 1x1 convolution; 0: no tail
};

// The block input as two parts side by side on channels, part 0 resized and padded first (the
// kResizeConcat step of graph/plan.h with two inputs).
struct IrConcatSource {
  bool enabled = false;
  const __half* part0 = nullptr;
  int c0 = 0;
  ResizeSpec resize;  // resize.resize may be false: part 0 already has the block's size
  const __half* part1 = nullptr;
  int c1 = 0;
};

struct IrTcTensors {
  const __half* in = nullptr;  // [batch][h][w][cin], unless concat.enabled
  IrConcatSource concat;
  const __half* expand_weight = nullptr;   // [hidden][cin]
  const __half* expand_bias = nullptr;     // [hidden]
  const __half* dw_weight = nullptr;       // [3][3][hidden]
  const __half* dw_bias = nullptr;         // [hidden]
  const __half* project_weight = nullptr;  // [cout][hidden]
  const __half* project_bias = nullptr;    // [cout]
  const __half* residual = nullptr;        // like out, or null
  Act act = Act::kNone;                    // after the projection
  __half* out = nullptr;                   // [batch][oh][ow][cout]; may be null with a tail
  const __half* tail_weight = nullptr;     // [tail_cout][cout]
  const __half* tail_bias = nullptr;       // [tail_cout]
  Act tail_act = Act::kNone;
  __half* tail_out = nullptr;  // [batch][oh][ow][tail_cout]
};

// Limits of the kernel (checked by IrTcUnsupported).
inline constexpr int kIrMaxCin = 64;
inline constexpr int kIrMaxHidden = 128;
inline constexpr int kIrMaxTailCout = 8;

// The tiles compiled for each stride; which is fastest depends on the layer and the GPU, so the
// backend times them (the larger ones need more shared memory than sm_86/sm_89 give a block).
const IrTile* IrTilesFor(int stride, int* count);

// Why the kernel cannot run this geometry with this tile, or empty when it can. `shared_limit` is
// the device's shared memory per block (cudaDevAttrMaxSharedMemoryPerBlockOptin).
std::string IrTcUnsupported(const IrTcGeometry& g, IrTile tile, size_t shared_limit);

// Dynamic shared memory of one thread block.
size_t IrTcSharedBytes(const IrTcGeometry& g, IrTile tile);

// Raises every instantiation's dynamic shared memory limit to `bytes` (the device's opt-in
// limit) on the current device; once per device, not during graph capture.
cudaError_t PrepareIrTcKernels(size_t bytes);

// Thread blocks that run at once on one multiprocessor for this geometry and tile (0 when none
// fit); the launch uses multiprocessors x this many blocks at most.
int IrTcBlocksPerSm(const IrTcGeometry& g, IrTile tile);

cudaError_t LaunchIrTc(const IrTcGeometry& g, const IrTcTensors& t, IrTile tile, int max_blocks,
                       cudaStream_t stream);

}  // namespace lipsync::cuda
