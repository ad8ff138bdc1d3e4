#include <cuda_fp16.h>

#include <limits>
#include <string>

#include "backends/cuda/kernels/depthwise_conv.cuh"
#include "backends/cuda/kernels/direct_conv.cuh"
#include "backends/cuda/kernels/elementwise.cuh"
#include "backends/cuda/kernels/frames.cuh"
#include "backends/cuda/kernels/fused_block.cuh"
#include "backends/cuda/kernels/gemm_conv.cuh"
#include "backends/cuda/kernels/layout.cuh"
#include "backends/cuda/kernels/resize_concat.cuh"
#include "backends/cuda/kernels/small_conv.cuh"
#include "backends/cuda/step_runner.h"

namespace lipsync::cuda {
namespace {

using graph::ConvKind;
using graph::Plan;
using graph::PlanStep;
using graph::StepKind;

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

std::string StepLabel(const Plan& plan, size_t index) {
  const PlanStep& s = plan.steps[index];
  std::string label = "step " + std::to_string(index) + " (" + graph::StepKindName(s.kind);
  if (s.kind == StepKind::kConv) label += std::string(" ") + graph::ConvKindName(s.conv.kind);
  return label + " '" + s.name + "')";
}

template <typename T>
T* Buffer(const Plan& plan, int id, int64_t batch, const DeviceTensors& t) {
  return static_cast<T*>(t.arena) + plan.buffers[id].offset * batch;
}

template <typename T>
cudaError_t EnqueueConv(const Plan& plan, const PlanStep& step, int64_t batch,
                        const DeviceTensors& dt, cudaStream_t stream) {
  const auto& in = plan.buffers[step.inputs[0]].shape;
  const auto& out = plan.buffers[step.output].shape;
  const auto& c = step.conv;
  ConvGeometry g;
  g.batch = batch;
  g.h = in.h;
  g.w = in.w;
  g.cin = in.c;
  g.oh = out.h;
  g.ow = out.w;
  g.cout = out.c;
  g.kh = static_cast<int>(c.kh);
  g.kw = static_cast<int>(c.kw);
  g.stride_h = static_cast<int>(c.stride_h);
  g.stride_w = static_cast<int>(c.stride_w);
  g.pad_top = static_cast<int>(c.pad_top);
  g.pad_left = static_cast<int>(c.pad_left);
  g.groups = static_cast<int>(c.groups);
  const T* weights = static_cast<const T*>(dt.weights);
  ConvTensors<T> t;
  t.in = Buffer<T>(plan, step.inputs[0], batch, dt);
  t.weight = weights + step.weight_offset;
  t.bias = weights + step.bias_offset;
  t.residual = step.epilogue.residual ? Buffer<T>(plan, step.inputs[1], batch, dt) : nullptr;
  t.out = Buffer<T>(plan, step.output, batch, dt);
  const Act act = ToAct(step.epilogue.activation);
  switch (c.kind) {
    case ConvKind::kDepthwise:
      return LaunchDepthwiseConv<T>(g, t, act, stream);
    case ConvKind::kPointwise:  // [Cout][Cin] is the dense layout with kh = kw = 1
    case ConvKind::kDense:
      if (g.groups != 1) return LaunchDirectConv<T>(g, t, act, stream);
      return UseSmallImageConv(g) ? LaunchSmallImageConv<T>(g, t, act, stream)
                                  : LaunchGemmConv<T>(g, t, act, stream);
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t EnqueueTyped(const Plan& plan, const PlanStep& step, int64_t batch,
                         const DeviceTensors& dt, cudaStream_t stream) {
  const auto& out = plan.buffers[step.output].shape;
  T* out_data = Buffer<T>(plan, step.output, batch, dt);
  switch (step.kind) {
    case StepKind::kConv:
      return EnqueueConv<T>(plan, step, batch, dt, stream);
    case StepKind::kResizeConcat:
    case StepKind::kConcat: {
      ConcatParts<T> parts;
      parts.count = static_cast<int>(step.inputs.size());
      for (int i = 0; i < parts.count; ++i) {
        parts.src[i] = Buffer<T>(plan, step.inputs[i], batch, dt);
        parts.channels[i] = static_cast<int>(plan.buffers[step.inputs[i]].shape.c);
      }
      ResizeSpec r;
      if (step.kind == StepKind::kResizeConcat) {
        const auto& src = plan.buffers[step.inputs[0]].shape;
        r = ResizeSpecOf(step.resize, src.h, src.w);
      }
      return LaunchResizeConcat<T>(parts, r, batch, static_cast<int>(out.h),
                                   static_cast<int>(out.w), out_data, stream);
    }
    case StepKind::kPad: {
      const auto& in = plan.buffers[step.inputs[0]].shape;
      PadSpec pad;
      pad.top = static_cast<int>(step.pad.top);
      pad.left = static_cast<int>(step.pad.left);
      pad.value = step.pad.value;
      return LaunchPad<T>(Buffer<T>(plan, step.inputs[0], batch, dt), static_cast<int>(in.h),
                          static_cast<int>(in.w), pad, batch, static_cast<int>(out.h),
                          static_cast<int>(out.w), static_cast<int>(out.c), out_data, stream);
    }
    case StepKind::kAdd:
    case StepKind::kActivation:
    case StepKind::kCopy: {
      const T* b =
          step.kind == StepKind::kAdd ? Buffer<T>(plan, step.inputs[1], batch, dt) : nullptr;
      const Act act = step.kind == StepKind::kCopy ? Act::kNone : ToAct(step.epilogue.activation);
      return LaunchElementwise<T>(Buffer<T>(plan, step.inputs[0], batch, dt), b,
                                  batch * out.elements(), act, out_data, stream);
    }
  }
  return cudaErrorInvalidValue;
}

Status LaunchStatus(cudaError_t e, const std::string& what) {
  if (e == cudaSuccess) return Status::Ok();
  return Internal(std::string("CUDA kernel launch for ") + what +
                  " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

bool SameShape(const graph::ItemShape& a, const graph::ItemShape& b) {
  return a.h == b.h && a.w == b.w && a.c == b.c;
}

Status CheckStep(const Plan& plan, size_t index) {
  const PlanStep& s = plan.steps[index];
  const auto bad = [&](const std::string& why) {
    return Unimplemented("CUDA backend: " + StepLabel(plan, index) + ": " + why);
  };
  const int buffers = static_cast<int>(plan.buffers.size());
  if (s.output < 0 || s.output >= buffers || s.inputs.empty()) return bad("no output or input");
  for (int id : s.inputs) {
    if (id < 0 || id >= buffers) return bad("input buffer id out of range");
  }
  const auto& out = plan.buffers[s.output].shape;
  const auto& in = plan.buffers[s.inputs[0]].shape;
  const auto weights = static_cast<int64_t>(plan.weights.size());
  switch (s.kind) {
    case StepKind::kConv: {
      const auto& c = s.conv;
      if (c.cin != in.c || c.cout != out.c) return bad("channel counts differ from its buffers");
      if (c.groups < 1 || c.cin % c.groups != 0 || c.cout % c.groups != 0) {
        return bad("groups " + std::to_string(c.groups) + " do not divide the channels");
      }
      if (c.kind == ConvKind::kDepthwise && (c.groups != c.cin || c.cin != c.cout)) {
        return bad("depthwise conv with groups != channels");
      }
      if (c.kind == ConvKind::kPointwise && c.groups != 1) return bad("grouped pointwise conv");
      const int64_t expected = c.kind == ConvKind::kDepthwise
                                   ? c.kh * c.kw * c.cout
                                   : c.cout * c.kh * c.kw * (c.cin / c.groups);
      if (s.weight_offset < 0 || s.bias_offset < 0 || s.weight_offset + expected > weights ||
          s.bias_offset + c.cout > weights) {
        return bad("weights or bias missing or outside the weight blob");
      }
      if (s.epilogue.residual &&
          (s.inputs.size() < 2 || !SameShape(plan.buffers[s.inputs[1]].shape, out))) {
        return bad("residual input missing or of another shape than the output");
      }
      return Status::Ok();
    }
    case StepKind::kResizeConcat:
    case StepKind::kConcat: {
      if (s.inputs.size() > static_cast<size_t>(kMaxConcatParts)) {
        return bad("more than " + std::to_string(kMaxConcatParts) + " concatenated inputs");
      }
      int64_t channels = 0;
      for (size_t i = 0; i < s.inputs.size(); ++i) {
        const auto& part = plan.buffers[s.inputs[i]].shape;
        channels += part.c;
        const bool resized = i == 0 && s.kind == StepKind::kResizeConcat;
        if (!resized && (part.h != out.h || part.w != out.w)) {
          return bad("concatenated input " + std::to_string(i) + " has another size");
        }
      }
      if (channels != out.c) return bad("channel counts do not add up to the output's");
      if (s.kind == StepKind::kResizeConcat) {
        const auto& r = s.resize;
        if (r.pad_top < 0 || r.pad_left < 0 || r.pad_top + r.out_h > out.h ||
            r.pad_left + r.out_w > out.w) {
          return bad("resized input does not lie inside the output");
        }
      }
      return Status::Ok();
    }
    case StepKind::kPad:
      if (in.c != out.c) return bad("pad changes the channel count");
      return Status::Ok();
    case StepKind::kAdd:
      if (s.inputs.size() != 2 || !SameShape(plan.buffers[s.inputs[1]].shape, out)) {
        return bad("add needs two inputs of the output's shape");
      }
      [[fallthrough]];
    case StepKind::kActivation:
    case StepKind::kCopy:
      if (!SameShape(in, out)) return bad("elementwise input and output shapes differ");
      return Status::Ok();
  }
  return bad("unknown step kind");
}

}  // namespace

const char* StorageName(Storage s) { return s == Storage::kFloat16 ? "float16" : "float32"; }

Status CheckPlanSupported(const Plan& plan, int64_t max_batch) {
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  for (const auto& b : plan.buffers) {
    if (b.shape.h * b.shape.w * max_batch > kIntMax || b.shape.c > kIntMax) {
      return Unimplemented("CUDA backend: buffer '" + b.name + "' is too large for batch " +
                           std::to_string(max_batch));
    }
  }
  for (size_t i = 0; i < plan.steps.size(); ++i) LIPSYNC_RETURN_IF_ERROR(CheckStep(plan, i));
  for (const auto& t : plan.inputs) {
    if (t.buffer < 0 || t.buffer >= static_cast<int>(plan.buffers.size()) || t.nchw.size() != 4) {
      return Unimplemented("CUDA backend: input '" + t.name + "' is not a 4-d NCHW tensor");
    }
  }
  for (const auto& t : plan.outputs) {
    if (t.buffer < 0 || t.buffer >= static_cast<int>(plan.buffers.size())) {
      return Unimplemented("CUDA backend: output '" + t.name + "' has no buffer");
    }
    // [N,C] (a flattened [N,C,1,1], as the audio encoder's embeddings) is the same data.
    const auto& shape = plan.buffers[t.buffer].shape;
    const bool flat = t.nchw.size() == 2 && shape.h == 1 && shape.w == 1;
    if (t.nchw.size() != 4 && !flat) {
      return Unimplemented("CUDA backend: output '" + t.name + "' is neither a 4-d NCHW tensor " +
                           "nor a flattened [N,C,1,1] one");
    }
  }
  return Status::Ok();
}

Status EnqueueStep(const Plan& plan, size_t index, int64_t batch, const DeviceTensors& t,
                   cudaStream_t stream) {
  const PlanStep& step = plan.steps[index];
  const cudaError_t e = t.storage == Storage::kFloat16
                            ? EnqueueTyped<__half>(plan, step, batch, t, stream)
                            : EnqueueTyped<float>(plan, step, batch, t, stream);
  return LaunchStatus(e, StepLabel(plan, index));
}

Status EnqueueInput(const Plan& plan, size_t index, const float* nchw, int64_t batch,
                    const DeviceTensors& t, cudaStream_t stream) {
  const int id = plan.inputs[index].buffer;
  const auto& shape = plan.buffers[id].shape;
  const int c = static_cast<int>(shape.c);
  const int64_t pixels = shape.h * shape.w;
  const cudaError_t e = t.storage == Storage::kFloat16
                            ? LaunchNchwToNhwc<__half>(nchw, batch, c, pixels,
                                                       Buffer<__half>(plan, id, batch, t), stream)
                            : LaunchNchwToNhwc<float>(nchw, batch, c, pixels,
                                                      Buffer<float>(plan, id, batch, t), stream);
  return LaunchStatus(e, "input '" + plan.inputs[index].name + "'");
}

Status EnqueueOutput(const Plan& plan, size_t index, int64_t batch, const DeviceTensors& t,
                     float* nchw, cudaStream_t stream) {
  const int id = plan.outputs[index].buffer;
  const auto& shape = plan.buffers[id].shape;
  const int c = static_cast<int>(shape.c);
  const int64_t pixels = shape.h * shape.w;
  const cudaError_t e = t.storage == Storage::kFloat16
                            ? LaunchNhwcToNchw<__half>(Buffer<__half>(plan, id, batch, t), batch, c,
                                                       pixels, Act::kNone, nchw, stream)
                            : LaunchNhwcToNchw<float>(Buffer<float>(plan, id, batch, t), batch, c,
                                                      pixels, Act::kNone, nchw, stream);
  return LaunchStatus(e, "output '" + plan.outputs[index].name + "'");
}

Status EnqueueFacesInput(const Plan& plan, size_t index, const uint8_t* faces,
                         const FaceGeometry& geometry, int64_t batch, const DeviceTensors& t,
                         cudaStream_t stream) {
  const int id = plan.inputs[index].buffer;
  const auto& shape = plan.buffers[id].shape;
  if (shape.c != 6 || shape.h != geometry.size || shape.w != geometry.size) {
    return Internal("CUDA backend: input '" + plan.inputs[index].name + "' is not the [6," +
                    std::to_string(geometry.size) + "," + std::to_string(geometry.size) +
                    "] visual input of the frame form");
  }
  const cudaError_t e =
      t.storage == Storage::kFloat16
          ? LaunchFacesToVisual<__half>(faces, batch, geometry, Buffer<__half>(plan, id, batch, t),
                                        stream)
          : LaunchFacesToVisual<float>(faces, batch, geometry, Buffer<float>(plan, id, batch, t),
                                       stream);
  return LaunchStatus(e, "faces into input '" + plan.inputs[index].name + "'");
}

Status EnqueueOutputBytes(const Plan& plan, size_t index, int64_t batch, const DeviceTensors& t,
                          uint8_t* bytes, cudaStream_t stream) {
  const int id = plan.outputs[index].buffer;
  const int64_t count = plan.buffers[id].size * batch;
  const cudaError_t e =
      t.storage == Storage::kFloat16
          ? LaunchOutputToBytes<__half>(Buffer<__half>(plan, id, batch, t), count, bytes, stream)
          : LaunchOutputToBytes<float>(Buffer<float>(plan, id, batch, t), count, bytes, stream);
  return LaunchStatus(e, "output '" + plan.outputs[index].name + "' to bytes");
}

namespace {

bool Overlap(const graph::PlanBuffer& a, const graph::PlanBuffer& b) {
  return a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

}  // namespace

FusedBlockGeometry BlockGeometry(const Plan& plan, size_t first) {
  const PlanStep& dw = plan.steps[first + 1];
  const PlanStep& project = plan.steps[first + 2];
  const auto& in = plan.buffers[plan.steps[first].inputs[0]].shape;
  const auto& out = plan.buffers[project.output].shape;
  FusedBlockGeometry g;
  g.h = static_cast<int>(in.h);
  g.w = static_cast<int>(in.w);
  g.cin = static_cast<int>(in.c);
  g.hidden = static_cast<int>(dw.conv.cin);
  g.oh = static_cast<int>(out.h);
  g.ow = static_cast<int>(out.w);
  g.cout = static_cast<int>(out.c);
  g.stride = static_cast<int>(dw.conv.stride_h);
  g.pad_top = static_cast<int>(dw.conv.pad_top);
  g.pad_left = static_cast<int>(dw.conv.pad_left);
  return g;
}

bool CanFuseBlock(const Plan& plan, size_t i, Storage storage) {
  if (i + 2 >= plan.steps.size()) return false;
  const PlanStep& e = plan.steps[i];
  const PlanStep& d = plan.steps[i + 1];
  const PlanStep& p = plan.steps[i + 2];
  for (const PlanStep* s : {&e, &d, &p}) {
    if (s->kind != StepKind::kConv) return false;
  }
  if (e.conv.kind != ConvKind::kPointwise || e.epilogue.residual ||
      e.epilogue.activation != graph::Activation::kRelu) {
    return false;
  }
  if (d.conv.kind != ConvKind::kDepthwise || d.epilogue.residual ||
      d.epilogue.activation != graph::Activation::kRelu || d.conv.kh != 3 || d.conv.kw != 3 ||
      d.conv.stride_h != d.conv.stride_w || (d.conv.stride_h != 1 && d.conv.stride_h != 2) ||
      d.conv.pad_top < 0 || d.conv.pad_top > 2 || d.conv.pad_left < 0 || d.conv.pad_left > 2) {
    return false;
  }
  if (p.conv.kind != ConvKind::kPointwise) return false;
  const graph::PlanBuffer& expanded = plan.buffers[e.output];
  const graph::PlanBuffer& depthwise = plan.buffers[d.output];
  if (d.inputs[0] != e.output || p.inputs[0] != d.output) return false;
  // The intermediates are never written: nothing else may read them.
  if (expanded.is_output || depthwise.is_output || expanded.last_step != static_cast<int>(i + 1) ||
      depthwise.last_step != static_cast<int>(i + 2)) {
    return false;
  }
  // Tiles read the block input while others write the output: they must not share memory.
  const graph::PlanBuffer& input = plan.buffers[e.inputs[0]];
  const graph::PlanBuffer& output = plan.buffers[p.output];
  if (Overlap(input, output)) return false;
  if (p.epilogue.residual && Overlap(plan.buffers[p.inputs[1]], output)) return false;
  const FusedBlockGeometry g = BlockGeometry(plan, i);
  return g.hidden <= kMaxFusedHidden &&
         FusedBlockSharedBytes(g, StorageSize(storage)) <= kMaxFusedBlockSharedBytes;
}

namespace {

template <typename T>
cudaError_t LaunchFused(const Plan& plan, size_t first, int64_t batch, const DeviceTensors& dt,
                        cudaStream_t stream) {
  const PlanStep& e = plan.steps[first];
  const PlanStep& d = plan.steps[first + 1];
  const PlanStep& p = plan.steps[first + 2];
  FusedBlockGeometry g = BlockGeometry(plan, first);
  g.batch = static_cast<int>(batch);
  const T* weights = static_cast<const T*>(dt.weights);
  FusedBlockTensors<T> t;
  t.in = Buffer<T>(plan, e.inputs[0], batch, dt);
  t.expand_weight = weights + e.weight_offset;
  t.expand_bias = weights + e.bias_offset;
  t.depthwise_weight = weights + d.weight_offset;
  t.depthwise_bias = weights + d.bias_offset;
  t.project_weight = weights + p.weight_offset;
  t.project_bias = weights + p.bias_offset;
  t.residual = p.epilogue.residual ? Buffer<T>(plan, p.inputs[1], batch, dt) : nullptr;
  t.out = Buffer<T>(plan, p.output, batch, dt);
  return LaunchFusedBlock<T>(g, t, ToAct(p.epilogue.activation), stream);
}

}  // namespace

std::vector<bool> FusedBlockStarts(const Plan& plan, Storage storage) {
  std::vector<bool> starts(plan.steps.size(), false);
  for (size_t i = 0; i + 2 < plan.steps.size(); ++i) {
    if (CanFuseBlock(plan, i, storage)) {
      starts[i] = true;
      i += 2;  // the block's steps are taken
    }
  }
  return starts;
}

Status PrepareFusedBlocks() {
  return LaunchStatus(PrepareFusedBlockKernels(), "the fused block kernels' shared memory");
}

Status EnqueueFusedBlock(const Plan& plan, size_t first, int64_t batch, const DeviceTensors& t,
                         cudaStream_t stream) {
  const cudaError_t e = t.storage == Storage::kFloat16
                            ? LaunchFused<__half>(plan, first, batch, t, stream)
                            : LaunchFused<float>(plan, first, batch, t, stream);
  return LaunchStatus(e, "the fused block of " + StepLabel(plan, first) + ", " +
                             StepLabel(plan, first + 1) + " and " + StepLabel(plan, first + 2));
}

}  // namespace lipsync::cuda
