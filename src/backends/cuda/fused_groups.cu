#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "backends/cuda/fused_groups.h"
#include "backends/cuda/kernels/ir_block_tc.cuh"
#include "backends/cuda/kernels/pointwise_small.cuh"

namespace lipsync::cuda {
namespace {

using graph::ConvKind;
using graph::Plan;
using graph::PlanBuffer;
using graph::PlanStep;
using graph::StepKind;

bool Overlap(const PlanBuffer& a, const PlanBuffer& b) {
  return a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

Act ToAct(graph::Activation a) {
  switch (a) {
    case graph::Activation::kRelu:
      return Act::kRelu;
    case graph::Activation::kSigmoid:
      return Act::kSigmoid;
    case graph::Activation::kNone:
      break;
  }
  return Act::kNone;
}

bool IsConv(const PlanStep& s, ConvKind kind) {
  return s.kind == StepKind::kConv && s.conv.kind == kind && !s.epilogue.residual;
}

// Steps i, i+1, i+2 are expand 1x1 + ReLU, depthwise 3x3 + ReLU (stride 1 or 2), project 1x1,
// and nothing else reads the expanded or depthwise tensors.
bool IsBlock(const Plan& plan, size_t i) {
  if (i + 2 >= plan.steps.size()) return false;
  const PlanStep& e = plan.steps[i];
  const PlanStep& d = plan.steps[i + 1];
  const PlanStep& p = plan.steps[i + 2];
  if (!IsConv(e, ConvKind::kPointwise) || e.epilogue.activation != graph::Activation::kRelu) {
    return false;
  }
  if (!IsConv(d, ConvKind::kDepthwise) || d.epilogue.activation != graph::Activation::kRelu ||
      d.conv.kh != 3 || d.conv.kw != 3 || d.conv.stride_h != d.conv.stride_w ||
      (d.conv.stride_h != 1 && d.conv.stride_h != 2) || d.conv.pad_top < 0 || d.conv.pad_top > 2 ||
      d.conv.pad_left < 0 || d.conv.pad_left > 2) {
    return false;
  }
  if (p.kind != StepKind::kConv || p.conv.kind != ConvKind::kPointwise) return false;
  if (d.inputs[0] != e.output || p.inputs[0] != d.output) return false;
  const PlanBuffer& expanded = plan.buffers[e.output];
  const PlanBuffer& depthwise = plan.buffers[d.output];
  return !expanded.is_output && !depthwise.is_output &&
         expanded.last_step == static_cast<int>(i + 1) &&
         depthwise.last_step == static_cast<int>(i + 2);
}

// The two-input resize-concat at step i - 1 builds the block's input and nothing else reads it.
bool HasHead(const Plan& plan, size_t i) {
  if (i == 0) return false;
  const PlanStep& h = plan.steps[i - 1];
  if (h.kind != StepKind::kResizeConcat || h.inputs.size() != 2) return false;
  const PlanBuffer& out = plan.buffers[h.output];
  return h.output == plan.steps[i].inputs[0] && !out.is_output &&
         out.last_step == static_cast<int>(i);
}

// Step i + 3 is a 1x1 convolution (no residual, at most kIrMaxTailCout outputs) of the block's
// output, which nothing else reads; and it does not start another block.
bool HasTail(const Plan& plan, size_t i) {
  if (i + 3 >= plan.steps.size()) return false;
  const PlanStep& t = plan.steps[i + 3];
  const PlanStep& p = plan.steps[i + 2];
  if (!IsConv(t, ConvKind::kPointwise) || t.inputs[0] != p.output || t.conv.cout > kIrMaxTailCout ||
      IsBlock(plan, i + 3)) {
    return false;
  }
  const PlanBuffer& out = plan.buffers[p.output];
  return !out.is_output && out.last_step == static_cast<int>(i + 3);
}

IrTcGeometry TcGeometry(const Plan& plan, size_t i, bool tail) {
  IrTcGeometry g;
  static_cast<FusedBlockGeometry&>(g) = BlockGeometry(plan, i);
  g.tail_cout = tail ? static_cast<int>(plan.steps[i + 3].conv.cout) : 0;
  return g;
}

// Tiles read their inputs' halos while other tiles write: no buffer a kernel reads may share
// memory with one it writes.
bool Disjoint(const Plan& plan, const std::vector<int>& reads, const std::vector<int>& writes) {
  for (int r : reads) {
    for (int w : writes) {
      if (Overlap(plan.buffers[r], plan.buffers[w])) return false;
    }
  }
  return true;
}

// Buffers the tensor-core kernel reads and writes for `group` with the head/tail inside or not.
void TcBuffers(const Plan& plan, const FusedGroup& group, bool fuse_head, bool fuse_tail,
               std::vector<int>* reads, std::vector<int>* writes) {
  const PlanStep& e = plan.steps[group.expand];
  const PlanStep& p = plan.steps[group.expand + 2];
  if (fuse_head) {
    for (int b : plan.steps[group.first].inputs) reads->push_back(b);
  } else {
    reads->push_back(e.inputs[0]);
  }
  if (p.epilogue.residual) reads->push_back(p.inputs[1]);
  if (fuse_tail) {
    writes->push_back(plan.steps[group.expand + 3].output);
  } else {
    writes->push_back(p.output);
  }
}

// A 1x1 convolution the split-reduction kernel takes: float16, few pixels.
bool IsSmallPointwise(const Plan& plan, size_t i, Storage storage) {
  const PlanStep& s = plan.steps[i];
  if (storage != Storage::kFloat16 || s.kind != StepKind::kConv ||
      s.conv.kind != ConvKind::kPointwise || s.conv.groups != 1) {
    return false;
  }
  const auto& out = plan.buffers[s.output].shape;
  return out.h * out.w <= kSmallPointwisePixels &&
         SmallPointwiseSupports(out.h * out.w, s.conv.cout, s.conv.cin);
}

// "up5.conv.double_conv.0" from "/up5/conv/double_conv/double_conv.0/conv/conv.0/Conv+...": the
// PyTorch module of the block as the exporter's scopes name it (a container and its child
// "name.k" collapse to the child), or "" when the name has another form.
std::string ModuleName(const std::string& step_name) {
  const std::string first = step_name.substr(0, step_name.find('+'));
  const size_t cut = first.find("/conv/conv.");
  if (first.empty() || first[0] != '/' || cut == std::string::npos) return "";
  std::vector<std::string> parts;
  size_t at = 1;
  while (at <= cut) {
    const size_t next = first.find('/', at);
    parts.push_back(first.substr(at, next - at));
    at = next + 1;
  }
  std::string name;
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k + 1 < parts.size() && parts[k + 1].rfind(parts[k] + ".", 0) == 0) continue;
    name += (name.empty() ? "" : ".") + parts[k];
  }
  return name;
}

}  // namespace

Result<DeviceLimits> QueryDeviceLimits(int device) {
  DeviceLimits limits;
  int shared = 0, sms = 0;
  if (cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) !=
          cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return Internal("CUDA backend: cannot read the shared memory and multiprocessors of device " +
                    std::to_string(device));
  }
  limits.shared_per_block = static_cast<size_t>(shared);
  limits.multiprocessors = sms;
  limits.on_device = true;
  return limits;
}

std::string GroupVariant::Name() const {
  switch (kind) {
    case VariantKind::kUnfused:
      return "unfused";
    case VariantKind::kCudaCore:
      return "cuda-core";
    case VariantKind::kSmallPointwise:
      return "tensor-core split reduction";
    case VariantKind::kTensorCore:
      break;
  }
  std::string name = "tensor-core " + std::to_string(tile_h) + "x" + std::to_string(tile_w);
  if (fuse_head) name += " +resize-concat";
  if (fuse_tail) name += " +last conv";
  return name;
}

int GroupVariant::Kernels(const FusedGroup& group) const {
  if (kind == VariantKind::kUnfused) return static_cast<int>(group.count);
  int kernels = 1;
  if (group.head && !fuse_head) ++kernels;
  if (group.tail && !fuse_tail) ++kernels;
  return kernels;
}

std::vector<graph::StepSpan> FusableSpans(const Plan& plan) {
  std::vector<graph::StepSpan> spans;
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    if (!IsBlock(plan, i)) continue;
    const bool head = HasHead(plan, i) && (spans.empty() || spans.back().last + 1 < i);
    const size_t last = i + 2 + (HasTail(plan, i) ? 1 : 0);
    spans.push_back({head ? i - 1 : i, last});
    i = last;
  }
  return spans;
}

Status PlanForFusion(Plan* plan) {
  graph::PlanBuffers(plan);  // the lifetimes FusableSpans reads, from the steps
  graph::PlanBuffers(plan, FusableSpans(*plan));
  return graph::CheckBufferPlan(*plan);
}

std::vector<FusedGroup> FindFusedGroups(const Plan& plan, Storage storage,
                                        const DeviceLimits& limits) {
  std::vector<FusedGroup> groups;
  size_t next_free = 0;  // steps before this belong to an earlier group
  for (size_t i = next_free; i < plan.steps.size(); i = std::max(i + 1, next_free)) {
    const std::string module = ModuleName(plan.steps[i].name);
    if (IsBlock(plan, i)) {
      FusedGroup g;
      g.expand = i;
      g.head = i >= next_free + 1 && HasHead(plan, i);
      g.tail = HasTail(plan, i);
      g.first = g.head ? i - 1 : i;
      g.count = (i + 3 + (g.tail ? 1 : 0)) - g.first;
      if (GroupVariants(plan, g, storage, limits).size() >= 2) {
        g.name = (module.empty() ? "block" : module) + " (steps " + std::to_string(g.first) + "-" +
                 std::to_string(g.first + g.count - 1) + ")";
        groups.push_back(g);
        next_free = g.first + g.count;
        continue;
      }
    }
    // Not a block a fused kernel runs: its 1x1 convolutions may still be small ones.
    if (IsSmallPointwise(plan, i, storage)) {
      FusedGroup g;
      g.kind = FusedGroup::Kind::kPointwise;
      g.first = g.expand = i;
      g.count = 1;
      const auto& out = plan.buffers[plan.steps[i].output].shape;
      g.name = (module.empty() ? "" : module + " ") + "1x1 " +
               std::to_string(plan.steps[i].conv.cin) + "->" + std::to_string(out.c) + " at " +
               std::to_string(out.h) + "x" + std::to_string(out.w) + " (step " + std::to_string(i) +
               ")";
      groups.push_back(g);
      next_free = i + 1;
    }
  }
  return groups;
}

std::vector<GroupVariant> GroupVariants(const Plan& plan, const FusedGroup& group, Storage storage,
                                        const DeviceLimits& limits) {
  std::vector<GroupVariant> variants(1);  // unfused
  if (group.kind == FusedGroup::Kind::kPointwise) {
    if (IsSmallPointwise(plan, group.first, storage)) {
      GroupVariant v;
      v.kind = VariantKind::kSmallPointwise;
      variants.push_back(v);
    }
    return variants;
  }
  if (storage == Storage::kFloat16) {
    const IrTcGeometry full = TcGeometry(plan, group.expand, group.tail);
    const IrTcGeometry block = TcGeometry(plan, group.expand, false);
    int count = 0;
    const IrTile* tiles = IrTilesFor(full.stride, &count);
    for (int k = 0; k < count; ++k) {
      for (const bool whole : {true, false}) {
        if (!whole && !group.head && !group.tail) continue;  // the same as the whole group
        GroupVariant v;
        v.kind = VariantKind::kTensorCore;
        v.tile_h = tiles[k].h;
        v.tile_w = tiles[k].w;
        v.fuse_head = whole && group.head;
        v.fuse_tail = whole && group.tail;
        const IrTcGeometry& g = v.fuse_tail ? full : block;
        if (!IrTcUnsupported(g, tiles[k], limits.shared_per_block).empty()) continue;
        std::vector<int> reads, writes;
        TcBuffers(plan, group, v.fuse_head, v.fuse_tail, &reads, &writes);
        if (!Disjoint(plan, reads, writes)) continue;
        const int per_sm = limits.on_device ? IrTcBlocksPerSm(g, tiles[k]) : 1;
        if (per_sm < 1) continue;
        v.max_blocks = per_sm * std::max(1, limits.multiprocessors);
        variants.push_back(v);
      }
    }
  }
  if (CanFuseBlock(plan, group.expand, storage)) {
    GroupVariant v;
    v.kind = VariantKind::kCudaCore;
    variants.push_back(v);
  }
  return variants;
}

Status PrepareFusedKernels(const DeviceLimits& limits) {
  const cudaError_t e = PrepareIrTcKernels(limits.shared_per_block);
  if (e != cudaSuccess) {
    return Internal(std::string("CUDA backend: raising the fused kernels' shared memory: ") +
                    cudaGetErrorString(e));
  }
  return PrepareFusedBlocks();
}

namespace {

template <typename T>
T* Buffer(const Plan& plan, int id, int64_t batch, const DeviceTensors& t) {
  return static_cast<T*>(t.arena) + plan.buffers[id].offset * batch;
}

cudaError_t LaunchTensorCore(const Plan& plan, const FusedGroup& group, const GroupVariant& v,
                             int64_t batch, const DeviceTensors& dt, cudaStream_t stream) {
  const size_t i = group.expand;
  const PlanStep& e = plan.steps[i];
  const PlanStep& d = plan.steps[i + 1];
  const PlanStep& p = plan.steps[i + 2];
  IrTcGeometry g = TcGeometry(plan, i, v.fuse_tail);
  g.batch = static_cast<int>(batch);
  const __half* w = static_cast<const __half*>(dt.weights);
  IrTcTensors t;
  if (v.fuse_head) {
    const PlanStep& h = plan.steps[group.first];
    const auto& src = plan.buffers[h.inputs[0]].shape;
    IrConcatSource& c = t.concat;
    c.enabled = true;
    c.part0 = Buffer<__half>(plan, h.inputs[0], batch, dt);
    c.c0 = static_cast<int>(src.c);
    c.part1 = Buffer<__half>(plan, h.inputs[1], batch, dt);
    c.c1 = static_cast<int>(plan.buffers[h.inputs[1]].shape.c);
    c.resize = ResizeSpecOf(h.resize, src.h, src.w);
  } else {
    t.in = Buffer<__half>(plan, e.inputs[0], batch, dt);
  }
  t.expand_weight = w + e.weight_offset;
  t.expand_bias = w + e.bias_offset;
  t.dw_weight = w + d.weight_offset;
  t.dw_bias = w + d.bias_offset;
  t.project_weight = w + p.weight_offset;
  t.project_bias = w + p.bias_offset;
  t.residual = p.epilogue.residual ? Buffer<__half>(plan, p.inputs[1], batch, dt) : nullptr;
  t.act = ToAct(p.epilogue.activation);
  if (v.fuse_tail) {
    const PlanStep& tail = plan.steps[i + 3];
    t.tail_weight = w + tail.weight_offset;
    t.tail_bias = w + tail.bias_offset;
    t.tail_act = ToAct(tail.epilogue.activation);
    t.tail_out = Buffer<__half>(plan, tail.output, batch, dt);
  } else {
    t.out = Buffer<__half>(plan, p.output, batch, dt);
  }
  return LaunchIrTc(g, t, IrTile{v.tile_h, v.tile_w}, v.max_blocks, stream);
}

}  // namespace

Status EnqueueGroup(const Plan& plan, const FusedGroup& group, const GroupVariant& variant,
                    int64_t batch, const DeviceTensors& tensors, cudaStream_t stream) {
  const size_t last = group.first + group.count - 1;
  if (variant.kind == VariantKind::kUnfused) {
    for (size_t s = group.first; s <= last; ++s) {
      LIPSYNC_RETURN_IF_ERROR(EnqueueStep(plan, s, batch, tensors, stream));
    }
    return Status::Ok();
  }
  if (variant.kind == VariantKind::kSmallPointwise) {
    if (tensors.storage != Storage::kFloat16) {
      return Internal("CUDA backend: the split-reduction kernel runs float16 only");
    }
    const PlanStep& s = plan.steps[group.first];
    const __half* w = static_cast<const __half*>(tensors.weights);
    SmallPointwise p;
    p.in = Buffer<__half>(plan, s.inputs[0], batch, tensors);
    p.weight = w + s.weight_offset;
    p.bias = w + s.bias_offset;
    p.residual = s.epilogue.residual ? Buffer<__half>(plan, s.inputs[1], batch, tensors) : nullptr;
    p.out = Buffer<__half>(plan, s.output, batch, tensors);
    const auto& out = plan.buffers[s.output].shape;
    p.m = static_cast<int>(batch * out.h * out.w);
    p.n = static_cast<int>(out.c);
    p.k = static_cast<int>(s.conv.cin);
    p.act = ToAct(s.epilogue.activation);
    const cudaError_t e = LaunchSmallPointwise(p, stream);
    if (e != cudaSuccess) {
      return Internal("CUDA kernel launch for " + variant.Name() + " of " + group.name +
                      " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
    }
    return Status::Ok();
  }
  const bool inside_head = variant.kind == VariantKind::kTensorCore && variant.fuse_head;
  const bool inside_tail = variant.kind == VariantKind::kTensorCore && variant.fuse_tail;
  if (group.head && !inside_head) {
    LIPSYNC_RETURN_IF_ERROR(EnqueueStep(plan, group.first, batch, tensors, stream));
  }
  if (variant.kind == VariantKind::kCudaCore) {
    LIPSYNC_RETURN_IF_ERROR(EnqueueFusedBlock(plan, group.expand, batch, tensors, stream));
  } else {
    if (tensors.storage != Storage::kFloat16) {
      return Internal("CUDA backend: the tensor-core block kernel runs float16 only");
    }
    const cudaError_t e = LaunchTensorCore(plan, group, variant, batch, tensors, stream);
    if (e != cudaSuccess) {
      return Internal("CUDA kernel launch for " + variant.Name() + " of " + group.name +
                      " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
    }
  }
  if (group.tail && !inside_tail) {
    LIPSYNC_RETURN_IF_ERROR(EnqueueStep(plan, last, batch, tensors, stream));
  }
  return Status::Ok();
}

}  // namespace lipsync::cuda
