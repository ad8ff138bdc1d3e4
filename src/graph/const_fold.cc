#include "graph/const_fold.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <set>

namespace lipsync::graph {
namespace {

Status NodeError(const OnnxNode& node, const std::string& why) {
  return Unimplemented("node " + node.describe() + ": " + why);
}

OnnxTensor IntTensor(std::vector<int64_t> dims, std::vector<int64_t> values) {
  OnnxTensor t;
  t.elem_type = onnx::TensorProto::INT64;
  t.dims = std::move(dims);
  t.ints = std::move(values);
  return t;
}

// Values as doubles so that mixed int/float arithmetic has one path; unknown dims stay marked.
double At(const OnnxTensor& t, int64_t i) {
  return t.is_float ? t.floats[i] : static_cast<double>(t.ints[i]);
}

int64_t NormalizeAxis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

Result<OnnxTensor> Binary(const OnnxNode& node, const OnnxTensor& a, const OnnxTensor& b) {
  const int64_t na = a.element_count(), nb = b.element_count();
  if (na != nb && na != 1 && nb != 1) {
    return NodeError(node,
                     "broadcasting other than scalar-with-tensor is not supported in folding");
  }
  OnnxTensor out;
  out.dims = na >= nb ? a.dims : b.dims;
  out.elem_type = a.elem_type;
  out.is_float = a.is_float || b.is_float;
  const int64_t n = std::max(na, nb);
  const std::string& op = node.op_type;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ia = na == 1 ? 0 : i, ib = nb == 1 ? 0 : i;
    if (out.is_float) {
      const double x = At(a, ia), y = At(b, ib);
      double r = op == "Add" ? x + y : op == "Sub" ? x - y : op == "Mul" ? x * y : x / y;
      out.floats.push_back(static_cast<float>(r));
    } else {
      const int64_t x = a.ints[ia], y = b.ints[ib];
      if (x == kUnknownDim || y == kUnknownDim) {
        out.ints.push_back(kUnknownDim);
        continue;
      }
      if (op == "Div" && y == 0) return NodeError(node, "integer division by zero");
      int64_t r = op == "Add" ? x + y : op == "Sub" ? x - y : op == "Mul" ? x * y : x / y;
      out.ints.push_back(r);
    }
  }
  return out;
}

Result<OnnxTensor> Gather(const OnnxNode& node, const OnnxTensor& data, const OnnxTensor& idx) {
  const int64_t axis = node.get_int("axis", 0);
  if (data.dims.size() > 1 || (axis != 0 && axis != -1)) {
    return NodeError(node, "folding Gather supports 1-D data only");
  }
  const int64_t n = data.element_count();
  OnnxTensor out;
  out.elem_type = data.elem_type;
  out.is_float = data.is_float;
  out.dims = idx.dims;
  for (int64_t i : idx.ints) {
    if (i < 0) i += n;
    if (i < 0 || i >= n) return NodeError(node, "Gather index out of range");
    if (data.is_float) {
      out.floats.push_back(data.floats[i]);
    } else {
      out.ints.push_back(data.ints[i]);
    }
  }
  return out;
}

Result<OnnxTensor> Slice(const OnnxNode& node, const OnnxTensor& data,
                         const std::vector<const OnnxTensor*>& in) {
  const int64_t rank = static_cast<int64_t>(data.dims.size());
  std::vector<int64_t> starts, ends, axes, steps;
  if (in.size() >= 3 && in[1] && in[2]) {
    starts = in[1]->ints;
    ends = in[2]->ints;
    if (in.size() >= 4 && in[3]) axes = in[3]->ints;
    if (in.size() >= 5 && in[4]) steps = in[4]->ints;
  } else {
    starts = node.get_ints("starts");
    ends = node.get_ints("ends");
    axes = node.get_ints("axes");
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (starts.size() != ends.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    return NodeError(node, "Slice starts, ends, axes and steps disagree in length");
  }
  // Per axis, the source indices the slice keeps.
  std::vector<std::vector<int64_t>> keep(rank);
  for (int64_t d = 0; d < rank; ++d) {
    for (int64_t i = 0; i < data.dims[d]; ++i) keep[d].push_back(i);
  }
  for (size_t k = 0; k < axes.size(); ++k) {
    const int64_t axis = NormalizeAxis(axes[k], rank);
    if (axis < 0 || axis >= rank || steps[k] == 0) return NodeError(node, "bad Slice axis or step");
    if (starts[k] == kUnknownDim || ends[k] == kUnknownDim) {
      return NodeError(node, "Slice bounds depend on the batch");
    }
    const int64_t n = data.dims[axis], step = steps[k];
    auto fix = [&](int64_t v) { return v < 0 ? v + n : v; };
    int64_t s = fix(starts[k]), e = fix(ends[k]);
    if (step > 0) {
      s = std::clamp<int64_t>(s, 0, n);
      e = std::clamp<int64_t>(e, 0, n);
    } else {
      s = std::clamp<int64_t>(s, -1, n - 1);
      e = std::clamp<int64_t>(e, -1, n - 1);
    }
    keep[axis].clear();
    for (int64_t i = s; step > 0 ? i < e : i > e; i += step) keep[axis].push_back(i);
  }
  OnnxTensor out;
  out.elem_type = data.elem_type;
  out.is_float = data.is_float;
  for (int64_t d = 0; d < rank; ++d) out.dims.push_back(static_cast<int64_t>(keep[d].size()));
  std::vector<int64_t> strides(rank, 1);
  for (int64_t d = rank - 2; d >= 0; --d) strides[d] = strides[d + 1] * data.dims[d + 1];
  const int64_t count = out.element_count();
  for (int64_t o = 0; o < count; ++o) {
    int64_t rem = o, src = 0;
    for (int64_t d = rank - 1; d >= 0; --d) {
      src += keep[d][rem % out.dims[d]] * strides[d];
      rem /= out.dims[d];
    }
    if (data.is_float) {
      out.floats.push_back(data.floats[src]);
    } else {
      out.ints.push_back(data.ints[src]);
    }
  }
  return out;
}

Result<std::vector<int64_t>> UnsqueezeDims(const OnnxNode& node, std::vector<int64_t> dims,
                                           std::vector<int64_t> axes) {
  const int64_t rank = static_cast<int64_t>(dims.size() + axes.size());
  for (auto& a : axes) a = NormalizeAxis(a, rank);
  std::sort(axes.begin(), axes.end());
  for (int64_t a : axes) {
    if (a < 0 || a > static_cast<int64_t>(dims.size())) return NodeError(node, "bad axes");
    dims.insert(dims.begin() + a, 1);
  }
  return dims;
}

Result<std::vector<int64_t>> ReshapeDims(const OnnxNode& node, const OnnxTensor& data,
                                         const std::vector<int64_t>& target) {
  std::vector<int64_t> dims = target;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == kUnknownDim) return NodeError(node, "Reshape to a batch-dependent shape");
    if (dims[i] == 0) dims[i] = i < data.dims.size() ? data.dims[i] : 1;
    if (dims[i] == -1) {
      infer = static_cast<int64_t>(i);
    } else {
      known *= dims[i];
    }
  }
  if (infer >= 0) dims[infer] = known == 0 ? 0 : data.element_count() / known;
  int64_t total = 1;
  for (int64_t d : dims) total *= d;
  if (total != data.element_count()) return NodeError(node, "Reshape changes the element count");
  return dims;
}

Result<OnnxTensor> Transpose(const OnnxNode& node, const OnnxTensor& data) {
  std::vector<int64_t> perm = node.get_ints("perm");
  const size_t rank = data.dims.size();
  if (perm.empty()) {
    for (size_t i = 0; i < rank; ++i) perm.push_back(static_cast<int64_t>(rank - 1 - i));
  }
  if (perm.size() != rank) return NodeError(node, "perm does not match the rank");
  OnnxTensor out = data;
  for (size_t i = 0; i < rank; ++i) out.dims[i] = data.dims[perm[i]];
  std::vector<int64_t> in_strides(rank, 1), idx(rank, 0);
  for (int64_t i = static_cast<int64_t>(rank) - 2; i >= 0; --i) {
    in_strides[i] = in_strides[i + 1] * data.dims[i + 1];
  }
  const int64_t n = data.element_count();
  for (int64_t o = 0; o < n; ++o) {
    int64_t rem = o, src = 0;
    for (int64_t i = static_cast<int64_t>(rank) - 1; i >= 0; --i) {
      const int64_t coord = rem % out.dims[i];
      rem /= out.dims[i];
      src += coord * in_strides[perm[i]];
    }
    if (data.is_float) {
      out.floats[o] = data.floats[src];
    } else {
      out.ints[o] = data.ints[src];
    }
  }
  return out;
}

}  // namespace

Result<std::vector<OnnxTensor>> FoldNode(const OnnxNode& node,
                                         const std::map<std::string, OnnxTensor>& constants,
                                         const KnownShapes& shapes) {
  const std::string& op = node.op_type;
  if (op == "Shape") {
    auto it = shapes.find(node.inputs.at(0));
    std::vector<int64_t> dims;
    if (it != shapes.end()) {
      dims = it->second;
    } else {
      dims = constants.at(node.inputs.at(0)).dims;
    }
    const int64_t rank = static_cast<int64_t>(dims.size());
    int64_t start = NormalizeAxis(node.get_int("start", 0), rank);
    int64_t end = node.has("end") ? NormalizeAxis(node.get_int("end", rank), rank) : rank;
    start = std::clamp<int64_t>(start, 0, rank);
    end = std::clamp<int64_t>(end, start, rank);
    std::vector<int64_t> v(dims.begin() + start, dims.begin() + end);
    return std::vector<OnnxTensor>{IntTensor({static_cast<int64_t>(v.size())}, v)};
  }
  if (op == "Constant") {
    if (node.has("value")) {
      const auto& a = node.attributes.at("value");
      if (a.tensors.empty()) return NodeError(node, "value attribute holds no tensor");
      return std::vector<OnnxTensor>{a.tensors[0]};
    }
    if (node.has("value_int"))
      return std::vector<OnnxTensor>{IntTensor({}, {node.get_int("value_int", 0)})};
    if (node.has("value_ints")) {
      auto v = node.get_ints("value_ints");
      return std::vector<OnnxTensor>{IntTensor({static_cast<int64_t>(v.size())}, v)};
    }
    if (node.has("value_float")) {
      OnnxTensor t;
      t.elem_type = onnx::TensorProto::FLOAT;
      t.is_float = true;
      t.floats = {node.get_float("value_float", 0)};
      return std::vector<OnnxTensor>{t};
    }
    return NodeError(node, "Constant without a supported value attribute");
  }

  // Every other op reads its inputs as constants.
  std::vector<const OnnxTensor*> in;
  for (const auto& name : node.inputs) {
    if (name.empty()) {
      in.push_back(nullptr);
      continue;
    }
    auto it = constants.find(name);
    if (it == constants.end()) return NodeError(node, "input '" + name + "' is not constant");
    in.push_back(&it->second);
  }
  auto need = [&](size_t count) -> Status {
    if (in.size() < count) return NodeError(node, "too few inputs");
    for (size_t i = 0; i < count; ++i) {
      if (!in[i]) return NodeError(node, "missing input");
    }
    return Status::Ok();
  };
  LIPSYNC_RETURN_IF_ERROR(need(op == "ConstantOfShape" ? 1 : 1));
  const OnnxTensor& x = *in[0];

  if (op == "Identity") return std::vector<OnnxTensor>{x};
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    LIPSYNC_RETURN_IF_ERROR(need(2));
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor r, Binary(node, x, *in[1]));
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Neg" || op == "Floor" || op == "Ceil") {
    OnnxTensor r = x;
    for (auto& v : r.floats) v = op == "Neg" ? -v : op == "Floor" ? std::floor(v) : std::ceil(v);
    for (auto& v : r.ints) {
      if (op == "Neg" && v != kUnknownDim) v = -v;
    }
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Gather") {
    LIPSYNC_RETURN_IF_ERROR(need(2));
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor r, Gather(node, x, *in[1]));
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Slice") {
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor r, Slice(node, x, in));
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Unsqueeze" || op == "Squeeze") {
    std::vector<int64_t> axes = in.size() >= 2 && in[1] ? in[1]->ints : node.get_ints("axes");
    OnnxTensor r = x;
    if (op == "Unsqueeze") {
      LIPSYNC_ASSIGN_OR_RETURN(r.dims, UnsqueezeDims(node, x.dims, axes));
    } else {
      const int64_t rank = static_cast<int64_t>(x.dims.size());
      std::vector<int64_t> dims;
      for (int64_t i = 0; i < rank; ++i) {
        const bool listed =
            axes.empty() ? x.dims[i] == 1 : std::any_of(axes.begin(), axes.end(), [&](int64_t a) {
              return NormalizeAxis(a, rank) == i;
            });
        if (!listed) dims.push_back(x.dims[i]);
      }
      r.dims = dims;
    }
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Concat") {
    OnnxTensor r;
    r.elem_type = x.elem_type;
    r.is_float = x.is_float;
    if (x.dims.size() > 1) return NodeError(node, "folding Concat supports 1-D tensors only");
    for (const auto* t : in) {
      if (!t) continue;
      if (t->is_float != r.is_float) return NodeError(node, "mixed element types");
      r.floats.insert(r.floats.end(), t->floats.begin(), t->floats.end());
      r.ints.insert(r.ints.end(), t->ints.begin(), t->ints.end());
    }
    r.dims = {static_cast<int64_t>(r.is_float ? r.floats.size() : r.ints.size())};
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Cast") {
    const int64_t to = node.get_int("to", 0);
    OnnxTensor r;
    r.name = x.name;
    r.dims = x.dims;
    r.elem_type = static_cast<int32_t>(to);
    r.is_float = to == onnx::TensorProto::FLOAT || to == onnx::TensorProto::DOUBLE ||
                 to == onnx::TensorProto::FLOAT16;
    const int64_t n = x.element_count();
    for (int64_t i = 0; i < n; ++i) {
      if (r.is_float) {
        if (!x.is_float && x.ints[i] == kUnknownDim) {
          return NodeError(node, "casts a batch-dependent value to float");
        }
        r.floats.push_back(static_cast<float>(At(x, i)));
      } else {
        if (x.is_float && !(std::fabs(x.floats[i]) < 9.2e18f)) {  // NaN too
          return NodeError(
              node, "casts " + std::to_string(x.floats[i]) + ", which no 64-bit integer holds");
        }
        r.ints.push_back(x.is_float ? static_cast<int64_t>(x.floats[i]) : x.ints[i]);
      }
    }
    return std::vector<OnnxTensor>{r};
  }
  if (op == "ConstantOfShape") {
    OnnxTensor r;
    for (int64_t d : x.ints) {
      if (d == kUnknownDim || d < 0) return NodeError(node, "shape depends on the batch");
    }
    r.dims = x.ints;
    const int64_t n = r.element_count();
    if (node.has("value") && !node.attributes.at("value").tensors.empty()) {
      const OnnxTensor& v = node.attributes.at("value").tensors[0];
      r.elem_type = v.elem_type;
      r.is_float = v.is_float;
      if (v.is_float) {
        r.floats.assign(n, v.floats.empty() ? 0.0f : v.floats[0]);
      } else {
        r.ints.assign(n, v.ints.empty() ? 0 : v.ints[0]);
      }
    } else {
      r.elem_type = onnx::TensorProto::FLOAT;
      r.is_float = true;
      r.floats.assign(n, 0.0f);
    }
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Reshape") {
    LIPSYNC_RETURN_IF_ERROR(need(2));
    OnnxTensor r = x;
    LIPSYNC_ASSIGN_OR_RETURN(r.dims, ReshapeDims(node, x, in[1]->ints));
    return std::vector<OnnxTensor>{r};
  }
  if (op == "Transpose") {
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor r, Transpose(node, x));
    return std::vector<OnnxTensor>{r};
  }
  return NodeError(node, "is not a shape operation the compiler can fold");
}

}  // namespace lipsync::graph
