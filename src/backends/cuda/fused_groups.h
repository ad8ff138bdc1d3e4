// Groups of plan steps that another kernel can run, and the ways (variants) of running each: for
// an inverted-residual block, the unfused steps, the tensor-core block kernel
// (kernels/ir_block_tc.cuh) with its tiles, with or without the resize-concat before the block and
// the 1x1 convolution after it, and the CUDA-core fused block (kernels/fused_block.cuh); for a 1x1
// convolution with few pixels, its step or the split-reduction kernel
// (kernels/pointwise_small.cuh). The backend checks each variant against the unfused steps and
// times it at load (autotune.h); a variant is only ever a faster way to compute what the steps
// compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include "backends/cuda/step_runner.h"
#include "graph/buffer_plan.h"

namespace lipsync::cuda {

// What the kernels may use of the device.
struct DeviceLimits {
  size_t shared_per_block = 0;  // opt-in dynamic shared memory per block
  int multiprocessors = 0;
  // Read from a device (QueryDeviceLimits): the kernels' occupancy can be asked. Without one
  // (planning tests) a persistent grid of one block per multiprocessor is assumed.
  bool on_device = false;
};
Result<DeviceLimits> QueryDeviceLimits(int device);

// Plan steps [first, first + count): an inverted-residual block (expand 1x1 + ReLU, depthwise
// 3x3 + ReLU, project 1x1 at `expand`), optionally preceded by the two-input resize-concat that
// builds its input (`head`) and followed by a 1x1 convolution of its output (`tail`), each only
// when nothing else reads the buffer between them.
// Or, kind kPointwise: the one 1x1 convolution at `first` (count 1).
struct FusedGroup {
  enum class Kind { kBlock, kPointwise };
  Kind kind = Kind::kBlock;
  size_t first = 0, count = 0;
  size_t expand = 0;
  bool head = false, tail = false;
  std::string name;  // the block's module and steps, for reports
};

// 1x1 convolutions with at most this many output pixels per item are pointwise groups (float16).
inline constexpr int64_t kSmallPointwisePixels = 40 * 40;

enum class VariantKind { kUnfused, kTensorCore, kCudaCore, kSmallPointwise };

struct GroupVariant {
  VariantKind kind = VariantKind::kUnfused;
  int tile_h = 0, tile_w = 0;                 // kTensorCore: the output tile
  bool fuse_head = false, fuse_tail = false;  // kTensorCore: head / tail inside the kernel
  int max_blocks = 0;                         // kTensorCore: the persistent grid on this device
  // E.g. "unfused", "tensor-core 8x16 +head", "cuda-core".
  std::string Name() const;
  // Kernel launches of one run of the group.
  int Kernels(const FusedGroup& group) const;
};

// The steps of every block (with its head and tail) a fused kernel could run, whatever the
// device and the arena: graph::PlanBuffers keeps what they read apart from what they write.
std::vector<graph::StepSpan> FusableSpans(const graph::Plan& plan);
// The plan's arena made again with those spans kept apart (graph::PlanBuffers), and checked.
Status PlanForFusion(graph::Plan* plan);

// Every group of `plan` in step order (none overlap) that has at least one fused variant here.
std::vector<FusedGroup> FindFusedGroups(const graph::Plan& plan, Storage storage,
                                        const DeviceLimits& limits);

// [0] is the unfused steps; then every fused variant that can run the group on this device.
std::vector<GroupVariant> GroupVariants(const graph::Plan& plan, const FusedGroup& group,
                                        Storage storage, const DeviceLimits& limits);

// Raises the fused kernels' shared memory limits on the current device; once per device before
// any fused launch, outside graph capture.
Status PrepareFusedKernels(const DeviceLimits& limits);

// Enqueues the whole group (all `count` steps' work) with `variant`.
Status EnqueueGroup(const graph::Plan& plan, const FusedGroup& group, const GroupVariant& variant,
                    int64_t batch, const DeviceTensors& tensors, cudaStream_t stream);

}  // namespace lipsync::cuda
