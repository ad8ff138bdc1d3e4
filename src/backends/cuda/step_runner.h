// Runs the steps of a compiled plan (graph/plan.h) on a CUDA stream: the bridge between the plan
// and the kernels. Host code sees no CUDA device types beyond the stream.
//
// The arena and the weights hold the plan's storage type: float, or IEEE half (weights converted
// once at load, activations stored as half, all arithmetic in float). Both keep the plan's
// element offsets, so buffer b of a batch of N starts at element plan.buffers[b].offset * N.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::cuda {

enum class Storage { kFloat32, kFloat16 };

inline size_t StorageSize(Storage s) { return s == Storage::kFloat16 ? 2 : 4; }
const char* StorageName(Storage s);

struct DeviceTensors {
  Storage storage = Storage::kFloat32;
  void* arena = nullptr;          // plan.arena_floats * batch elements
  const void* weights = nullptr;  // plan.weights.size() elements
};

// Unimplemented naming the first step, buffer or tensor the kernels cannot run (checked once at
// load, before anything is uploaded). `max_batch` bounds the 32-bit index arithmetic.
Status CheckPlanSupported(const graph::Plan& plan, int64_t max_batch);

// Enqueues step `index` of `plan` for `batch` items. A launch failure becomes an Internal status
// naming the step.
Status EnqueueStep(const graph::Plan& plan, size_t index, int64_t batch, const DeviceTensors& t,
                   cudaStream_t stream);

// Model input `index` from NCHW float32 device memory into its NHWC arena buffer.
Status EnqueueInput(const graph::Plan& plan, size_t index, const float* nchw, int64_t batch,
                    const DeviceTensors& t, cudaStream_t stream);

// Model output `index` from its arena buffer to NCHW float32 device memory.
Status EnqueueOutput(const graph::Plan& plan, size_t index, int64_t batch, const DeviceTensors& t,
                     float* nchw, cudaStream_t stream);

// Inverted-residual blocks one kernel can run (kernels/fused_block.cuh): for each step, true when
// it starts one: a 1x1 expand conv with ReLU whose output only the next step reads, a 3x3 depthwise
// conv (stride 1 or 2) with ReLU whose output only the step after reads, and a 1x1 project conv
// whose output does not share arena memory with the block's input; and the shapes fit on chip
// (kernels/fused_block.cuh: at most kMaxFusedHidden expanded channels, the shared memory bound).
std::vector<bool> FusedBlockStarts(const graph::Plan& plan, Storage storage);
// Whether step `first` starts such a block (the test FusedBlockStarts applies to each step).
bool CanFuseBlock(const graph::Plan& plan, size_t first, Storage storage);

// The shapes of the expand -> depthwise -> project block whose expand is step `first`.
struct FusedBlockGeometry;
FusedBlockGeometry BlockGeometry(const graph::Plan& plan, size_t first);
// Once per device before the fused blocks run (outside graph capture).
Status PrepareFusedBlocks();
// Runs steps first, first + 1 and first + 2 as one fused kernel.
Status EnqueueFusedBlock(const graph::Plan& plan, size_t first, int64_t batch,
                         const DeviceTensors& t, cudaStream_t stream);

// The frame form's first step: faces [batch][source][source][3] uint8 on the device into the NHWC
// arena buffer of visual input `index` (see kernels/frames.cuh for the geometry).
struct FaceGeometry;
Status EnqueueFacesInput(const graph::Plan& plan, size_t index, const uint8_t* faces,
                         const FaceGeometry& geometry, int64_t batch, const DeviceTensors& t,
                         cudaStream_t stream);

// The frame form's last step: model output `index` as BGR uint8 faces [batch][S][S][3].
Status EnqueueOutputBytes(const graph::Plan& plan, size_t index, int64_t batch,
                          const DeviceTensors& t, uint8_t* bytes, cudaStream_t stream);

}  // namespace lipsync::cuda
