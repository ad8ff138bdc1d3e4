// Lowering: ONNX nodes -> RawOps on NHWC activations, with shape arithmetic folded away.
#include <onnx/onnx_pb.h>

#include <cmath>
#include <map>
#include <set>

#include "graph/const_fold.h"
#include "graph/operators.h"
#include "graph/raw_ops.h"

namespace lipsync::graph {
namespace {

Status NodeError(const OnnxNode& node, const std::string& why) {
  return Unimplemented("node " + node.describe() + ": " + why);
}

std::string DimsToString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ',';
    s += dims[i] == kUnknownDim ? std::string("N") : std::to_string(dims[i]);
  }
  s += ']';
  return s;
}

// A node with fewer inputs than its operator needs, or no output, is a malformed file: refused
// before anything reads them.
Status CheckArity(const OnnxNode& node) {
  const OperatorInfo* op = FindOperator(node.op_type);
  size_t given = 0;  // leading inputs that are named (an empty name is an omitted one)
  while (given < node.inputs.size() && !node.inputs[given].empty()) ++given;
  if (op && given < op->min_inputs) {
    return NodeError(node, "has " + std::to_string(given) + " inputs; " + node.op_type +
                               " needs at least " + std::to_string(op->min_inputs));
  }
  if (node.outputs.empty() || node.outputs[0].empty()) return NodeError(node, "has no output");
  return Status::Ok();
}

class Lowerer {
 public:
  explicit Lowerer(const OnnxModel& m) : model_(m) {}

  Result<LoweredGraph> Run() {
    constants_ = model_.initializers;
    LIPSYNC_RETURN_IF_ERROR(AddInputs());
    for (const auto& node : model_.nodes) LIPSYNC_RETURN_IF_ERROR(Lower(node));
    for (const auto& out : model_.outputs) {
      if (out.elem_type != 0 && out.elem_type != onnx::TensorProto::FLOAT) {
        return Unimplemented("output '" + out.name + "' has ONNX element type " +
                             std::to_string(out.elem_type) +
                             "; the native backends give float32 outputs only");
      }
      const std::string name = Resolve(out.name);
      auto it = out_.shapes.find(name);
      if (it == out_.shapes.end()) {
        return Unimplemented("graph output '" + out.name +
                             "' is a constant or not a 4-D activation; not supported");
      }
      PlanTensor t;
      t.name = name;
      t.nchw = {batch_dim_, it->second.c, it->second.h, it->second.w};
      if (flat_.count(out.name)) t.nchw = {batch_dim_, it->second.c};
      out_.outputs.push_back(t);
      out_.output_tensors.push_back(name);
    }
    return std::move(out_);
  }

 private:
  std::string Resolve(const std::string& name) const {
    auto it = alias_.find(name);
    return it == alias_.end() ? name : it->second;
  }
  bool IsActivation(const std::string& name) const { return out_.shapes.count(Resolve(name)); }

  Status AddInputs() {
    for (const auto& in : model_.inputs) {
      if (in.elem_type != onnx::TensorProto::FLOAT) {
        return Unimplemented("input '" + in.name + "' has ONNX element type " +
                             std::to_string(in.elem_type) +
                             "; the native backends take float32 inputs only (a float16 model " +
                             "must keep float32 inputs and outputs, with Cast nodes inside)");
      }
      if (in.dims.size() != 4 || in.dims[1] <= 0 || in.dims[2] <= 0 || in.dims[3] <= 0) {
        return Unimplemented("input '" + in.name + "': expected a 4-D NCHW input with static " +
                             "C, H, W, got " + DimsToString(in.dims));
      }
      const int64_t batch = in.dims[0] > 0 ? in.dims[0] : -1;
      if (out_.inputs.empty()) {
        batch_dim_ = batch;
      } else if (batch != batch_dim_) {
        return Unimplemented("input '" + in.name + "': inputs disagree on the batch dimension");
      }
      PlanTensor t;
      t.name = in.name;
      t.nchw = {batch, in.dims[1], in.dims[2], in.dims[3]};
      out_.inputs.push_back(t);
      out_.shapes[in.name] = ItemShape{in.dims[2], in.dims[3], in.dims[1]};
    }
    if (out_.inputs.empty()) return Unimplemented("the model has no inputs");
    return Status::Ok();
  }

  KnownShapes ShapesForFolding() const {
    KnownShapes known;
    const int64_t n = batch_dim_ > 0 ? batch_dim_ : kUnknownDim;
    for (const auto& [name, s] : out_.shapes) known[name] = {n, s.c, s.h, s.w};
    for (const auto& [from, to] : alias_) {
      if (out_.shapes.count(to)) known[from] = known[to];
      if (flat_.count(from) && known.count(from)) known[from] = {n, known[from][1]};
    }
    return known;
  }

  const OnnxTensor* Constant(const OnnxNode& node, size_t index) const {
    if (index >= node.inputs.size() || node.inputs[index].empty()) return nullptr;
    auto it = constants_.find(node.inputs[index]);
    return it == constants_.end() ? nullptr : &it->second;
  }

  Status Lower(const OnnxNode& node) {
    if (!node.domain.empty() && node.domain != "ai.onnx") {
      return NodeError(node, "operators of domain '" + node.domain + "' are not supported");
    }
    LIPSYNC_RETURN_IF_ERROR(CheckArity(node));
    // A node whose inputs are all constants (or Shape of an activation) is evaluated now.
    bool all_const = true;
    for (const auto& in : node.inputs) {
      if (!in.empty() && !constants_.count(in)) all_const = false;
    }
    const bool shape_of_activation = node.op_type == "Shape" && IsActivation(node.inputs.at(0));
    const OperatorInfo* info = FindOperator(node.op_type);
    if ((all_const || shape_of_activation) && info && info->folds) {
      KnownShapes known;
      if (shape_of_activation) known = ShapesForFolding();
      LIPSYNC_ASSIGN_OR_RETURN(auto values, FoldNode(node, constants_, known));
      for (size_t i = 0; i < values.size() && i < node.outputs.size(); ++i) {
        values[i].name = node.outputs[i];
        constants_[node.outputs[i]] = std::move(values[i]);
      }
      return Status::Ok();
    }
    const std::string& op = node.op_type;
    if (op == "Identity") {
      alias_[node.outputs.at(0)] = Resolve(node.inputs.at(0));
      if (flat_.count(node.inputs.at(0))) flat_.insert(node.outputs.at(0));
      return Status::Ok();
    }
    if (op == "Conv") return LowerConv(node);
    if (op == "BatchNormalization") return LowerBatchNorm(node);
    if (op == "Relu" || op == "Sigmoid") return LowerActivation(node);
    if (op == "Add") return LowerAdd(node);
    if (op == "Concat") return LowerConcat(node);
    if (op == "Resize" || op == "Upsample") return LowerResize(node);
    if (op == "Pad") return LowerPad(node);
    if (op == "Cast") return LowerCast(node);
    if (op == "Flatten" || op == "Reshape") return LowerFlatten(node);
    if (info && !info->lowers) {
      return NodeError(node, "supported only on constants, but it reads a run-time activation");
    }
    return NodeError(node, "operator " + op + " is not supported by the lipsync graph compiler");
  }

  // Float16 files (weights stored as half floats, Cast nodes at the inputs and outputs) run in
  // float32: a cast between float types of an activation changes nothing the plan computes.
  Status LowerCast(const OnnxNode& node) {
    using onnx::TensorProto;
    const int64_t to = node.get_int("to", 0);
    if (to != TensorProto::FLOAT && to != TensorProto::FLOAT16 && to != TensorProto::BFLOAT16 &&
        to != TensorProto::DOUBLE) {
      return NodeError(node, "casts an activation to ONNX type " + std::to_string(to) +
                                 "; only casts between float types are supported");
    }
    alias_[node.outputs.at(0)] = Resolve(node.inputs.at(0));
    if (flat_.count(node.inputs.at(0))) flat_.insert(node.outputs.at(0));
    return Status::Ok();
  }

  Result<ItemShape> InputShape(const OnnxNode& node, size_t index) const {
    if (index >= node.inputs.size() || node.inputs[index].empty()) {
      return NodeError(node, "missing input " + std::to_string(index));
    }
    if (flat_.count(node.inputs[index])) {
      return NodeError(node, "input '" + node.inputs[index] +
                                 "' is a flattened [N,C] tensor; only a graph output may be one");
    }
    auto it = out_.shapes.find(Resolve(node.inputs[index]));
    if (it == out_.shapes.end()) {
      return NodeError(node, "input '" + node.inputs[index] +
                                 "' is not a 4-D activation (a constant here is not supported)");
    }
    return it->second;
  }

  RawOp Start(const OnnxNode& node, RawKind kind) {
    RawOp op;
    op.kind = kind;
    op.node_names = {node.name};
    op.output = node.outputs.at(0);
    return op;
  }

  void Finish(RawOp op) {
    out_.shapes[op.output] = op.shape;
    out_.ops.push_back(std::move(op));
  }

  Status LowerConv(const OnnxNode& node) {
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    const OnnxTensor* w = Constant(node, 1);
    if (!w || !w->is_float || w->dims.size() != 4) {
      return NodeError(node, "weights must be a constant 4-D float tensor (2-D convolution)");
    }
    const OnnxTensor* b = Constant(node, 2);
    if (node.inputs.size() > 2 && !node.inputs[2].empty() && !b) {
      return NodeError(node, "bias must be a constant");
    }
    for (int64_t d : node.get_ints("dilations")) {
      if (d != 1) return NodeError(node, "dilation other than 1 is not supported");
    }
    const std::string auto_pad = node.get_string("auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "VALID") {
      return NodeError(node, "auto_pad " + auto_pad + " is not supported");
    }
    RawOp op = Start(node, RawKind::kConv);
    ConvParams& c = op.conv;
    c.groups = node.get_int("group", 1);
    c.cout = w->dims[0];
    c.cin = x.c;
    c.kh = w->dims[2];
    c.kw = w->dims[3];
    if (c.groups <= 0 || x.c % c.groups || c.cout % c.groups || w->dims[1] * c.groups != x.c) {
      return NodeError(node, "weights " + DimsToString(w->dims) + " with group " +
                                 std::to_string(c.groups) + " do not match " + std::to_string(x.c) +
                                 " input channels");
    }
    auto strides = node.get_ints("strides");
    if (strides.size() == 2) {
      c.stride_h = strides[0];
      c.stride_w = strides[1];
    }
    auto pads = node.get_ints("pads");
    if (pads.size() == 4) {
      c.pad_top = pads[0];
      c.pad_left = pads[1];
      c.pad_bottom = pads[2];
      c.pad_right = pads[3];
    } else if (!pads.empty()) {
      return NodeError(node, "pads must have 4 values");
    }
    if (c.stride_h <= 0 || c.stride_w <= 0) return NodeError(node, "bad strides");
    if (c.pad_top < 0 || c.pad_left < 0 || c.pad_bottom < 0 || c.pad_right < 0) {
      return NodeError(node, "pads must not be negative");
    }
    const bool no_pad = c.pad_top == 0 && c.pad_left == 0 && c.pad_bottom == 0 && c.pad_right == 0;
    if (c.kh == 1 && c.kw == 1 && c.stride_h == 1 && c.stride_w == 1 && no_pad && c.groups == 1) {
      c.kind = ConvKind::kPointwise;
    } else if (c.groups == x.c && c.cout == x.c && c.groups > 1) {
      c.kind = ConvKind::kDepthwise;
    } else {
      c.kind = ConvKind::kDense;
    }
    op.shape.c = c.cout;
    op.shape.h = (x.h + c.pad_top + c.pad_bottom - c.kh) / c.stride_h + 1;
    op.shape.w = (x.w + c.pad_left + c.pad_right - c.kw) / c.stride_w + 1;
    if (op.shape.h <= 0 || op.shape.w <= 0) return NodeError(node, "the output would be empty");
    op.weight = w->floats;
    if (b) {
      if (!b->is_float || b->element_count() != c.cout) return NodeError(node, "bad bias");
      op.bias = b->floats;
    } else {
      op.bias.assign(c.cout, 0.0f);
    }
    op.inputs = {Resolve(node.inputs[0])};
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerBatchNorm(const OnnxNode& node) {
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    if (node.get_int("training_mode", 0) != 0) return NodeError(node, "training mode");
    const OnnxTensor* p[4];
    for (int i = 0; i < 4; ++i) {
      p[i] = Constant(node, i + 1);
      if (!p[i] || !p[i]->is_float || p[i]->element_count() != x.c) {
        return NodeError(node, "scale, bias, mean and var must be constant [C] float tensors");
      }
    }
    const float eps = node.get_float("epsilon", 1e-5f);
    RawOp op = Start(node, RawKind::kBatchNorm);
    op.shape = x;
    for (int64_t ch = 0; ch < x.c; ++ch) {
      const double scale =
          p[0]->floats[ch] / std::sqrt(static_cast<double>(p[3]->floats[ch]) + eps);
      op.bn_scale.push_back(static_cast<float>(scale));
      op.bn_shift.push_back(static_cast<float>(p[1]->floats[ch] - p[2]->floats[ch] * scale));
    }
    op.inputs = {Resolve(node.inputs[0])};
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerActivation(const OnnxNode& node) {
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    RawOp op = Start(node, RawKind::kActivation);
    op.shape = x;
    op.epilogue.activation = node.op_type == "Relu" ? Activation::kRelu : Activation::kSigmoid;
    op.inputs = {Resolve(node.inputs[0])};
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerAdd(const OnnxNode& node) {
    if (node.inputs.size() != 2) return NodeError(node, "Add needs two inputs");
    const bool a_act = IsActivation(node.inputs[0]), b_act = IsActivation(node.inputs[1]);
    if (a_act && b_act) {
      LIPSYNC_ASSIGN_OR_RETURN(ItemShape a, InputShape(node, 0));
      LIPSYNC_ASSIGN_OR_RETURN(ItemShape b, InputShape(node, 1));
      if (a.c != b.c || a.h != b.h || a.w != b.w) {
        return NodeError(node, "adds tensors of different shapes (broadcasting is not supported)");
      }
      RawOp op = Start(node, RawKind::kAdd);
      op.shape = a;
      op.inputs = {Resolve(node.inputs[0]), Resolve(node.inputs[1])};
      Finish(std::move(op));
      return Status::Ok();
    }
    // Activation + per-channel or scalar constant: a BatchNorm with scale 1.
    const size_t act = a_act ? 0 : 1;
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, act));
    const OnnxTensor* k = Constant(node, 1 - act);
    if (!k || !k->is_float)
      return NodeError(node, "the non-activation operand must be a float constant");
    // The constant must broadcast without changing the activation's [N,C,H,W] shape: at most four
    // dimensions, each 1 but for C values on the channel axis ([C,1,1,1] would add a batch).
    const int64_t n = k->element_count();
    bool keeps_shape = k->dims.size() <= 4;
    for (size_t i = 0; i < k->dims.size() && keeps_shape; ++i) {
      const bool channel_axis = k->dims.size() - i == 3;
      keeps_shape = k->dims[i] == 1 || (channel_axis && k->dims[i] == x.c);
    }
    if (!keeps_shape || (n != 1 && n != x.c)) {
      return NodeError(node, "only scalar or per-channel [C,1,1] constants can be added, got " +
                                 DimsToString(k->dims));
    }
    RawOp op = Start(node, RawKind::kBatchNorm);
    op.shape = x;
    op.bn_scale.assign(x.c, 1.0f);
    for (int64_t ch = 0; ch < x.c; ++ch) op.bn_shift.push_back(k->floats[n == 1 ? 0 : ch]);
    op.inputs = {Resolve(node.inputs[act])};
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerConcat(const OnnxNode& node) {
    const int64_t axis = node.get_int("axis", 1);
    if (axis != 1 && axis != -3) {
      return NodeError(node, "concatenation on axis " + std::to_string(axis) +
                                 " is not supported (only channels, axis 1)");
    }
    RawOp op = Start(node, RawKind::kConcat);
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      LIPSYNC_ASSIGN_OR_RETURN(ItemShape s, InputShape(node, i));
      if (i == 0) {
        op.shape = s;
        op.shape.c = 0;
      } else if (s.h != op.shape.h || s.w != op.shape.w) {
        return NodeError(node, "inputs differ in height or width");
      }
      op.shape.c += s.c;
      op.inputs.push_back(Resolve(node.inputs[i]));
    }
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerResize(const OnnxNode& node) {
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    RawOp op = Start(node, RawKind::kResize);
    const std::string mode = node.get_string("mode", "nearest");
    // Upsample and opset-10 Resize take (X, scales) and use asymmetric coordinates.
    const bool upsample = node.op_type == "Upsample" || node.inputs.size() == 2;
    if (node.get_int("antialias", 0) != 0) return NodeError(node, "antialias is not supported");
    const std::string ctm =
        upsample ? "asymmetric" : node.get_string("coordinate_transformation_mode", "half_pixel");
    if (mode == "linear" && ctm == "align_corners") {
      op.resize.mode = ResizeMode::kBilinearAlignCorners;
    } else if (mode == "linear" && ctm == "half_pixel") {
      op.resize.mode = ResizeMode::kBilinearHalfPixel;
    } else if (mode == "linear" && ctm == "pytorch_half_pixel") {
      op.resize.mode = ResizeMode::kBilinearPytorchHalfPixel;
    } else if (mode == "linear" && ctm == "asymmetric") {
      op.resize.mode = ResizeMode::kBilinearAsymmetric;
    } else if (mode == "nearest" && ctm == "asymmetric" &&
               node.get_string("nearest_mode", "round_prefer_floor") == "floor") {
      op.resize.mode = ResizeMode::kNearest;
    } else if (mode == "nearest" && upsample) {
      op.resize.mode = ResizeMode::kNearest;
    } else {
      return NodeError(node, "resize mode '" + mode + "' with coordinate transformation '" + ctm +
                                 "' is not supported (only linear + align_corners, half_pixel, " +
                                 "pytorch_half_pixel or asymmetric, and nearest + asymmetric + " +
                                 "floor)");
    }
    const OnnxTensor* scales = Constant(node, upsample ? 1 : 2);
    const OnnxTensor* sizes = upsample ? nullptr : Constant(node, 3);
    if (!upsample && node.inputs.size() > 3 && !node.inputs[3].empty() && !sizes) {
      return NodeError(node, "sizes must be computable at compile time");
    }
    if (sizes && sizes->element_count() == 4) {
      if (sizes->ints[1] != x.c && sizes->ints[1] != kUnknownDim) {
        return NodeError(node, "resizing the channel dimension is not supported");
      }
      op.resize.out_h = sizes->ints[2];
      op.resize.out_w = sizes->ints[3];
      op.resize.scale_h = static_cast<float>(op.resize.out_h) / static_cast<float>(x.h);
      op.resize.scale_w = static_cast<float>(op.resize.out_w) / static_cast<float>(x.w);
    } else if (scales && scales->element_count() == 4 && scales->is_float) {
      if (scales->floats[0] != 1.0f || scales->floats[1] != 1.0f) {
        return NodeError(node, "resizing batch or channel dimensions is not supported");
      }
      for (int i : {2, 3}) {  // so that the output size is defined
        const float scale = scales->floats[static_cast<size_t>(i)];
        if (!(scale > 0.0f && scale <= 1024.0f)) {
          return NodeError(node, "scale " + std::to_string(scale) + " is not in (0, 1024]");
        }
      }
      op.resize.out_h = static_cast<int64_t>(std::floor(x.h * scales->floats[2]));
      op.resize.out_w = static_cast<int64_t>(std::floor(x.w * scales->floats[3]));
      op.resize.scale_h = scales->floats[2];
      op.resize.scale_w = scales->floats[3];
    } else {
      return NodeError(node, "needs constant 4-element scales or sizes");
    }
    if (op.resize.out_h <= 0 || op.resize.out_w <= 0) {
      return NodeError(node, "the output size is not positive");
    }
    op.shape = {op.resize.out_h, op.resize.out_w, x.c};
    op.inputs = {Resolve(node.inputs[0])};
    Finish(std::move(op));
    return Status::Ok();
  }

  Status LowerPad(const OnnxNode& node) {
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    if (node.get_string("mode", "constant") != "constant") {
      return NodeError(node, "only constant padding is supported");
    }
    std::vector<int64_t> pads;
    float value = 0.0f;
    if (node.inputs.size() >= 2 && !node.inputs[1].empty()) {
      const OnnxTensor* p = Constant(node, 1);
      if (!p) return NodeError(node, "pads must be computable at compile time");
      pads = p->ints;
      const OnnxTensor* v = Constant(node, 2);
      if (node.inputs.size() >= 3 && !node.inputs[2].empty()) {
        if (!v) return NodeError(node, "constant_value must be a constant");
        value = v->is_float ? v->floats.at(0) : static_cast<float>(v->ints.at(0));
      }
      if (node.inputs.size() >= 4 && !node.inputs[3].empty()) {
        return NodeError(node, "the axes input is not supported");
      }
    } else {
      pads = node.get_ints("pads");
      value = node.get_float("value", 0.0f);
    }
    if (pads.size() != 8) return NodeError(node, "expected 8 pad values for a 4-D tensor");
    for (int64_t p : pads) {
      if (p == kUnknownDim) return NodeError(node, "pads depend on the batch");
    }
    if (pads[0] || pads[1] || pads[4] || pads[5]) {
      return NodeError(node, "padding the batch or channel dimension is not supported");
    }
    RawOp op = Start(node, RawKind::kPad);
    op.pad = {pads[2], pads[3], pads[6], pads[7], value};
    op.shape = {x.h + pads[2] + pads[6], x.w + pads[3] + pads[7], x.c};
    if (op.shape.h <= 0 || op.shape.w <= 0) return NodeError(node, "the output would be empty");
    const bool noop = pads[2] == 0 && pads[3] == 0 && pads[6] == 0 && pads[7] == 0;
    if (noop) {  // the common case at matching sizes: no step at all
      alias_[node.outputs.at(0)] = Resolve(node.inputs[0]);
      out_.notes.push_back("pad " + node.name + " is a no-op: removed");
      return Status::Ok();
    }
    op.inputs = {Resolve(node.inputs[0])};
    Finish(std::move(op));
    return Status::Ok();
  }

  // Flatten (axis 1) or Reshape to [N, C] of an activation with one pixel per channel ([N,C,1,1],
  // the audio encoder's last layer): the NHWC buffer already holds [N][C], so the result is the
  // same buffer seen as 2-D. Only a graph output may be such a tensor (InputShape refuses it).
  Status LowerFlatten(const OnnxNode& node) {
    const std::string& in = node.inputs.at(0);
    if (!IsActivation(in) || flat_.count(in)) {
      return NodeError(node, "supported only on a 4-D activation");
    }
    LIPSYNC_ASSIGN_OR_RETURN(ItemShape x, InputShape(node, 0));
    if (node.op_type == "Flatten") {
      if (node.get_int("axis", 1) != 1) return NodeError(node, "only axis 1 is supported");
    } else {
      const OnnxTensor* shape = Constant(node, 1);
      if (!shape || shape->ints.size() != 2) {
        return NodeError(node, "only a reshape to a constant 2-D [N,C] shape is supported");
      }
      const int64_t n = shape->ints[0], c = shape->ints[1];
      const bool n_ok = n == 0 || n == -1 || n == kUnknownDim || (n > 0 && n == batch_dim_);
      const bool c_ok = c == x.elements() || (c == -1 && n != -1);
      if (!n_ok || !c_ok) {
        return NodeError(node,
                         "only a reshape that keeps the batch and flattens the rest is "
                         "supported, got shape " +
                             DimsToString(shape->ints));
      }
    }
    if (x.h != 1 || x.w != 1) {
      return NodeError(node, "flattens a tensor with " + std::to_string(x.h) + "x" +
                                 std::to_string(x.w) + " pixels; only [N,C,1,1] is supported");
    }
    alias_[node.outputs.at(0)] = Resolve(in);
    flat_.insert(node.outputs.at(0));
    out_.notes.push_back(node.op_type + " " + node.name + " of [N," + std::to_string(x.c) +
                         ",1,1] to [N," + std::to_string(x.c) + "]: no step");
    return Status::Ok();
  }

  const OnnxModel& model_;
  std::set<std::string> flat_;  // flattened [N,C] tensors (aliases of [N,C,1,1] activations)
  std::map<std::string, OnnxTensor> constants_;
  std::map<std::string, std::string> alias_;
  LoweredGraph out_;
  int64_t batch_dim_ = -1;
};

}  // namespace

Result<LoweredGraph> LowerGraph(const OnnxModel& model) {
  Lowerer lowerer(model);
  LIPSYNC_ASSIGN_OR_RETURN(LoweredGraph g, lowerer.Run());
  // Keep the model's own output names: a graph output reached through Identity is renamed back.
  for (size_t i = 0; i < g.outputs.size(); ++i) g.outputs[i].name = model.outputs[i].name;
  return g;
}

}  // namespace lipsync::graph
