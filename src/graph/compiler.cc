#include "graph/compiler.h"

#include <map>

#include "graph/buffer_plan.h"
#include "graph/raw_ops.h"

namespace lipsync::graph {
namespace {

// Appends `values` to the weight blob at an aligned offset and returns that offset.
int64_t AppendWeights(Plan* plan, const std::vector<float>& values) {
  while (static_cast<int64_t>(plan->weights.size()) % kPlanAlignFloats) plan->weights.push_back(0);
  const int64_t offset = static_cast<int64_t>(plan->weights.size());
  plan->weights.insert(plan->weights.end(), values.begin(), values.end());
  return offset;
}

// ONNX [Cout][Cin/g][Kh][Kw] -> the plan's layout for the conv kind (see plan.h).
std::vector<float> RearrangeConvWeights(const ConvParams& c, const std::vector<float>& w) {
  const int64_t cig = c.cin / c.groups;
  std::vector<float> out(w.size());
  for (int64_t co = 0; co < c.cout; ++co) {
    for (int64_t ci = 0; ci < cig; ++ci) {
      for (int64_t ky = 0; ky < c.kh; ++ky) {
        for (int64_t kx = 0; kx < c.kw; ++kx) {
          const float v = w[((co * cig + ci) * c.kh + ky) * c.kw + kx];
          switch (c.kind) {
            case ConvKind::kPointwise:
              out[co * c.cin + ci] = v;
              break;
            case ConvKind::kDepthwise:
              out[(ky * c.kw + kx) * c.cout + co] = v;
              break;
            case ConvKind::kDense:
              out[((co * c.kh + ky) * c.kw + kx) * cig + ci] = v;
              break;
          }
        }
      }
    }
  }
  return out;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : "+") + n;
  return s;
}

class Emitter {
 public:
  Emitter(Plan* plan) : plan_(*plan) {}

  int AddBuffer(const std::string& name, ItemShape shape) {
    PlanBuffer b;
    b.name = name;
    b.shape = shape;
    plan_.buffers.push_back(b);
    const int id = static_cast<int>(plan_.buffers.size()) - 1;
    ids_[name] = id;
    return id;
  }
  int BufferOf(const std::string& name) const { return ids_.at(name); }

  Status Emit(const RawOp& op) {
    PlanStep step;
    step.name = JoinNames(op.node_names);
    for (const auto& in : op.inputs) {
      if (!ids_.count(in)) return Internal("step " + step.name + " reads unknown '" + in + "'");
      step.inputs.push_back(ids_.at(in));
    }
    step.epilogue = op.epilogue;
    switch (op.kind) {
      case RawKind::kConv: {
        step.kind = StepKind::kConv;
        step.conv = op.conv;
        step.weight_offset = AppendWeights(&plan_, RearrangeConvWeights(op.conv, op.weight));
        step.weight_count = static_cast<int64_t>(op.weight.size());
        step.bias_offset = AppendWeights(&plan_, op.bias);
        step.macs = op.shape.h * op.shape.w * op.conv.cout * op.conv.kh * op.conv.kw *
                    (op.conv.cin / op.conv.groups);
        break;
      }
      case RawKind::kConcat:
        step.kind = op.has_resize ? StepKind::kResizeConcat : StepKind::kConcat;
        step.resize = op.resize;
        break;
      case RawKind::kResize:
        step.kind = StepKind::kResizeConcat;
        step.resize = op.resize;
        break;
      case RawKind::kPad:
        step.kind = StepKind::kPad;
        step.pad = op.pad;
        break;
      case RawKind::kAdd:
        step.kind = StepKind::kAdd;
        break;
      case RawKind::kActivation:
        step.kind = StepKind::kActivation;
        break;
      case RawKind::kBatchNorm:
        return Internal("batchnorm " + step.name + " survived fusion");
    }
    step.output = AddBuffer(op.output, op.shape);
    plan_.steps.push_back(std::move(step));
    return Status::Ok();
  }

 private:
  Plan& plan_;
  std::map<std::string, int> ids_;
};

}  // namespace

Result<Plan> CompilePlan(const OnnxModel& model) {
  LIPSYNC_ASSIGN_OR_RETURN(LoweredGraph g, LowerGraph(model));
  FuseOps(&g);

  Plan plan;
  plan.opset = model.opset;
  plan.producer =
      model.producer_name + (model.producer_version.empty() ? "" : " " + model.producer_version);
  plan.fusions = g.notes;
  Emitter emit(&plan);
  for (auto& in : g.inputs) {
    in.buffer = emit.AddBuffer(in.name, g.shapes.at(in.name));
    plan.buffers[in.buffer].is_input = true;
    plan.fixed_batch = in.nchw[0];
  }
  plan.inputs = g.inputs;
  for (const auto& op : g.ops) {
    if (!op.dead) LIPSYNC_RETURN_IF_ERROR(emit.Emit(op));
  }
  for (size_t i = 0; i < g.outputs.size(); ++i) {
    PlanTensor out = g.outputs[i];
    int id = emit.BufferOf(g.output_tensors[i]);
    // An output that is a model input or already another output gets its own copy.
    if (plan.buffers[id].is_input || plan.buffers[id].is_output) {
      PlanStep copy;
      copy.kind = StepKind::kCopy;
      copy.name = "copy to " + out.name;
      copy.inputs = {id};
      id = emit.AddBuffer(out.name + "#copy", plan.buffers[id].shape);
      copy.output = id;
      plan.steps.push_back(copy);
    }
    plan.buffers[id].is_output = true;
    out.buffer = id;
    plan.outputs.push_back(out);
  }
  PlanBuffers(&plan);
  LIPSYNC_RETURN_IF_ERROR(CheckBufferPlan(plan));
  return plan;
}

Result<Plan> CompilePlanFromFile(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(OnnxModel model, LoadOnnxModel(path));
  return CompilePlan(model);
}

}  // namespace lipsync::graph
