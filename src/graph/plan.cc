#include "graph/plan.h"

#include <fmt/format.h>

#include "graph/buffer_plan.h"
#include "graph/compiler.h"

namespace lipsync::graph {

const char* StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kConv:
      return "conv";
    case StepKind::kResizeConcat:
      return "resize_concat";
    case StepKind::kConcat:
      return "concat";
    case StepKind::kPad:
      return "pad";
    case StepKind::kAdd:
      return "add";
    case StepKind::kActivation:
      return "activation";
    case StepKind::kCopy:
      return "copy";
  }
  return "?";
}

const char* ConvKindName(ConvKind kind) {
  switch (kind) {
    case ConvKind::kPointwise:
      return "pointwise";
    case ConvKind::kDepthwise:
      return "depthwise";
    case ConvKind::kDense:
      return "dense";
  }
  return "?";
}

const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return "none";
    case Activation::kRelu:
      return "relu";
    case Activation::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

int64_t PlanMacs(const Plan& plan) {
  int64_t macs = 0;
  for (const auto& s : plan.steps) macs += s.macs;
  return macs;
}

std::string PlanSummary(const Plan& plan, bool list_steps) {
  std::string out;
  auto shape = [&](int id) {
    const ItemShape& s = plan.buffers[id].shape;
    return fmt::format("{}x{}x{}", s.h, s.w, s.c);
  };
  if (list_steps) {
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const PlanStep& s = plan.steps[i];
      std::string what = StepKindName(s.kind);
      if (s.kind == StepKind::kConv) {
        what += fmt::format(" {} {}x{}/{}x{} g{}", ConvKindName(s.conv.kind), s.conv.kh, s.conv.kw,
                            s.conv.stride_h, s.conv.stride_w, s.conv.groups);
      }
      if (s.epilogue.residual) what += " +residual";
      if (s.epilogue.activation != Activation::kNone) {
        what += std::string(" +") + ActivationName(s.epilogue.activation);
      }
      std::string ins;
      for (int in : s.inputs) ins += (ins.empty() ? "" : ", ") + shape(in);
      out += fmt::format("{:4d} {:<40} [{}] -> {}  {}\n", i, what, ins, shape(s.output), s.name);
    }
  }
  int convs = 0;
  for (const auto& s : plan.steps) convs += s.kind == StepKind::kConv;
  const double mib = 1.0 / (1024.0 * 1024.0);
  out += fmt::format("steps: {} ({} convs), fusions and folds: {}\n", plan.steps.size(), convs,
                     plan.fusions.size());
  out += fmt::format("weights: {} floats ({:.1f} MiB)\n", plan.weights.size(),
                     plan.weights.size() * 4 * mib);
  out += fmt::format("arena per item: {:.2f} MiB (naive, no reuse: {:.2f} MiB, {:.1f}x smaller)\n",
                     plan.arena_floats * 4 * mib, plan.naive_floats * 4 * mib,
                     plan.arena_floats ? double(plan.naive_floats) / plan.arena_floats : 0.0);
  out += fmt::format("peak live activations per item: {:.2f} MiB (lower bound for any arena)\n",
                     PeakLiveFloats(plan) * 4 * mib);
  out += fmt::format("MACs per item: {:.3f} G\n", PlanMacs(plan) / 1e9);
  return out;
}

}  // namespace lipsync::graph
