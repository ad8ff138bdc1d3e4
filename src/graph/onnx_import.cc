#include "graph/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include "core/platform.h"
#include "graph/external_data.h"
#include "lipsync/tensor.h"

namespace lipsync::graph {
namespace {

using onnx::TensorProto;

// Copies `count` little-endian values of type T out of raw_data.
// `Widen` turns a stored value into the held one (half floats need more than a cast).
template <typename T, typename Out, typename Widen>
Status ReadRaw(std::string_view raw, int64_t count, const std::string& name, std::vector<Out>* out,
               Widen widen) {
  if (raw.size() != static_cast<size_t>(count) * sizeof(T)) {
    return DataLoss("tensor '" + name + "': raw_data holds " + std::to_string(raw.size()) +
                    " bytes, its dims need " + std::to_string(count * sizeof(T)));
  }
  out->resize(count);
  for (int64_t i = 0; i < count; ++i) {
    T v;
    std::memcpy(&v, raw.data() + i * sizeof(T), sizeof(T));
    (*out)[i] = widen(v);
  }
  return Status::Ok();
}

template <typename T, typename Out>
Status ReadRaw(std::string_view raw, int64_t count, const std::string& name,
               std::vector<Out>* out) {
  return ReadRaw<T>(raw, count, name, out, [](T v) { return static_cast<Out>(v); });
}

float BFloat16ToFloat(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Bytes per element as stored in raw_data; 0 for types the importer does not read.
size_t StoredElementSize(int32_t type) {
  switch (type) {
    case TensorProto::DOUBLE:
    case TensorProto::INT64:
      return 8;
    case TensorProto::FLOAT:
    case TensorProto::INT32:
      return 4;
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16:
    case TensorProto::INT16:
    case TensorProto::UINT16:
      return 2;
    case TensorProto::INT8:
    case TensorProto::UINT8:
    case TensorProto::BOOL:
      return 1;
    default:
      return 0;
  }
}

template <typename Field, typename Out>
Status ReadTyped(const Field& field, int64_t count, const std::string& name,
                 std::vector<Out>* out) {
  if (field.size() != count) {
    return DataLoss("tensor '" + name + "': holds " + std::to_string(field.size()) +
                    " values, its dims need " + std::to_string(count));
  }
  out->assign(field.begin(), field.end());
  return Status::Ok();
}

// `external` reads tensors kept in external files; null when the model came from memory.
Result<OnnxTensor> ConvertTensor(const TensorProto& t, ExternalDataFiles* external) {
  OnnxTensor out;
  out.name = t.name();
  out.elem_type = t.data_type();
  out.dims.assign(t.dims().begin(), t.dims().end());
  for (int64_t d : out.dims) {
    if (d < 0) return DataLoss("tensor '" + t.name() + "' has a negative dimension");
  }
  const int64_t n = out.element_count();
  bool raw = t.has_raw_data();
  std::string_view bytes = t.raw_data();
  if (t.data_location() == TensorProto::EXTERNAL) {
    if (!external) {
      return FailedPrecondition("tensor '" + t.name() +
                                "' keeps its data in an external file, which can only be found " +
                                "when the model is loaded from its file");
    }
    const size_t element_size = StoredElementSize(t.data_type());
    if (element_size == 0) {
      return Unimplemented("tensor '" + t.name() + "' has ONNX data type " +
                           std::to_string(t.data_type()) + ", which is not supported");
    }
    LIPSYNC_ASSIGN_OR_RETURN(ExternalDataRef ref, ReadExternalDataRef(t));
    LIPSYNC_ASSIGN_OR_RETURN(bytes, external->Read(t.name(), ref, n * element_size));
    raw = true;
  }
  switch (t.data_type()) {
    case TensorProto::FLOAT: {
      out.is_float = true;
      Status s = raw ? ReadRaw<float>(bytes, n, t.name(), &out.floats)
                     : ReadTyped(t.float_data(), n, t.name(), &out.floats);
      if (!s.ok()) return s;
      return out;
    }
    case TensorProto::FLOAT16:
    case TensorProto::BFLOAT16: {
      // Held as float: the native backends compute in float32 with the file's exact weights.
      out.is_float = true;
      std::vector<int64_t> stored;  // int32_data holds the 16-bit patterns when not raw
      auto widen = t.data_type() == TensorProto::FLOAT16 ? &HalfToFloat : &BFloat16ToFloat;
      if (raw) {
        LIPSYNC_RETURN_IF_ERROR(ReadRaw<uint16_t>(bytes, n, t.name(), &out.floats, widen));
        return out;
      }
      LIPSYNC_RETURN_IF_ERROR(ReadTyped(t.int32_data(), n, t.name(), &stored));
      out.floats.resize(n);
      for (int64_t i = 0; i < n; ++i) out.floats[i] = widen(static_cast<uint16_t>(stored[i]));
      return out;
    }
    case TensorProto::DOUBLE: {
      out.is_float = true;
      Status s = raw ? ReadRaw<double>(bytes, n, t.name(), &out.floats)
                     : ReadTyped(t.double_data(), n, t.name(), &out.floats);
      if (!s.ok()) return s;
      return out;
    }
    case TensorProto::INT64: {
      Status s = raw ? ReadRaw<int64_t>(bytes, n, t.name(), &out.ints)
                     : ReadTyped(t.int64_data(), n, t.name(), &out.ints);
      if (!s.ok()) return s;
      return out;
    }
    case TensorProto::INT32:
    case TensorProto::INT16:
    case TensorProto::INT8:
    case TensorProto::UINT8:
    case TensorProto::UINT16:
    case TensorProto::BOOL: {
      Status s;
      if (!raw) {
        s = ReadTyped(t.int32_data(), n, t.name(), &out.ints);
      } else if (t.data_type() == TensorProto::INT32) {
        s = ReadRaw<int32_t>(bytes, n, t.name(), &out.ints);
      } else if (t.data_type() == TensorProto::INT16) {
        s = ReadRaw<int16_t>(bytes, n, t.name(), &out.ints);
      } else if (t.data_type() == TensorProto::UINT16) {
        s = ReadRaw<uint16_t>(bytes, n, t.name(), &out.ints);
      } else if (t.data_type() == TensorProto::INT8) {
        s = ReadRaw<int8_t>(bytes, n, t.name(), &out.ints);
      } else {
        s = ReadRaw<uint8_t>(bytes, n, t.name(), &out.ints);
      }
      if (!s.ok()) return s;
      return out;
    }
    default:
      return Unimplemented("tensor '" + t.name() + "' has ONNX data type " +
                           std::to_string(t.data_type()) + ", which is not supported");
  }
}

Result<OnnxAttribute> ConvertAttribute(const onnx::AttributeProto& a, ExternalDataFiles* external) {
  OnnxAttribute out;
  out.name = a.name();
  out.type = a.type();
  out.i = a.i();
  out.f = a.f();
  out.s = a.s();
  out.ints.assign(a.ints().begin(), a.ints().end());
  out.floats.assign(a.floats().begin(), a.floats().end());
  if (a.has_t()) {
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor t, ConvertTensor(a.t(), external));
    out.tensors.push_back(std::move(t));
  }
  return out;
}

OnnxValueInfo ConvertValueInfo(const onnx::ValueInfoProto& v) {
  OnnxValueInfo out;
  out.name = v.name();
  if (v.type().has_tensor_type()) {
    const auto& tt = v.type().tensor_type();
    out.elem_type = tt.elem_type();
    for (const auto& d : tt.shape().dim()) {
      out.dims.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
    }
  }
  return out;
}

// A file cut at a field boundary can still parse; catch it by checking that every tensor a node
// or the graph refers to is defined.
Status CheckReferences(const OnnxModel& m, const std::string& origin) {
  std::set<std::string> defined;
  for (const auto& [name, t] : m.initializers) defined.insert(name);
  for (const auto& in : m.inputs) defined.insert(in.name);
  for (const auto& node : m.nodes) {
    for (const auto& in : node.inputs) {
      if (!in.empty() && !defined.count(in)) {
        return DataLoss("'" + origin + "': node " + node.describe() + " reads tensor '" + in +
                        "', which nothing defines (corrupt or truncated file?)");
      }
    }
    for (const auto& out : node.outputs) defined.insert(out);
  }
  for (const auto& out : m.outputs) {
    if (!defined.count(out.name)) {
      return DataLoss("'" + origin + "': graph output '" + out.name +
                      "' is not produced by any node (corrupt or truncated file?)");
    }
  }
  return Status::Ok();
}

}  // namespace

int64_t OnnxTensor::element_count() const {
  // Saturates instead of overflowing: a count that large matches no data and is refused.
  int64_t n = 1;
  for (int64_t d : dims) {
    if (d < 0) return -1;
    if (d > 0 && n > std::numeric_limits<int64_t>::max() / d)
      return std::numeric_limits<int64_t>::max();
    n *= d;
  }
  return n;
}

int64_t OnnxNode::get_int(const std::string& attr, int64_t fallback) const {
  auto it = attributes.find(attr);
  return it == attributes.end() ? fallback : it->second.i;
}
float OnnxNode::get_float(const std::string& attr, float fallback) const {
  auto it = attributes.find(attr);
  return it == attributes.end() ? fallback : it->second.f;
}
std::string OnnxNode::get_string(const std::string& attr, const std::string& fallback) const {
  auto it = attributes.find(attr);
  return it == attributes.end() ? fallback : it->second.s;
}
std::vector<int64_t> OnnxNode::get_ints(const std::string& attr) const {
  auto it = attributes.find(attr);
  return it == attributes.end() ? std::vector<int64_t>{} : it->second.ints;
}
std::string OnnxNode::describe() const {
  if (!name.empty()) return "'" + name + "' (" + op_type + ")";
  // Unnamed nodes are known by their first output.
  return "(unnamed, output '" + (outputs.empty() ? std::string() : outputs[0]) + "') (" + op_type +
         ")";
}

namespace {

Result<OnnxModel> ParseModel(const std::string& bytes, const std::string& origin,
                             ExternalDataFiles* external) {
  onnx::ModelProto proto;
  if (bytes.empty()) return DataLoss("'" + origin + "' is empty, not an ONNX model");
  if (!proto.ParseFromString(bytes)) {
    return DataLoss("'" + origin + "' is not a valid ONNX model (protobuf parse failed: " +
                    "corrupt or truncated file)");
  }
  if (!proto.has_graph() || proto.graph().output_size() == 0) {
    return DataLoss("'" + origin + "' holds no ONNX graph with outputs (corrupt file?)");
  }
  if (proto.opset_import_size() == 0) {
    return DataLoss("'" + origin + "' declares no opset (corrupt or truncated file?)");
  }
  OnnxModel m;
  m.path = origin;
  m.producer_name = proto.producer_name();
  m.producer_version = proto.producer_version();
  for (const auto& op : proto.opset_import()) {
    if (op.domain().empty() || op.domain() == "ai.onnx") m.opset = op.version();
  }
  const auto& g = proto.graph();
  for (const auto& init : g.initializer()) {
    LIPSYNC_ASSIGN_OR_RETURN(OnnxTensor t, ConvertTensor(init, external));
    m.initializers[t.name] = std::move(t);
  }
  for (const auto& in : g.input()) {
    if (!m.initializers.count(in.name())) m.inputs.push_back(ConvertValueInfo(in));
  }
  for (const auto& out : g.output()) m.outputs.push_back(ConvertValueInfo(out));
  for (const auto& n : g.node()) {
    OnnxNode node;
    node.name = n.name();
    node.op_type = n.op_type();
    node.domain = n.domain();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    for (const auto& a : n.attribute()) {
      LIPSYNC_ASSIGN_OR_RETURN(OnnxAttribute attr, ConvertAttribute(a, external));
      node.attributes[attr.name] = std::move(attr);
    }
    m.nodes.push_back(std::move(node));
  }
  LIPSYNC_RETURN_IF_ERROR(CheckReferences(m, origin));
  return m;
}

}  // namespace

Result<OnnxModel> ParseOnnxModel(const std::string& bytes, const std::string& origin) {
  return ParseModel(bytes, origin, nullptr);
}

Result<OnnxModel> LoadOnnxModel(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, platform::ReadWholeFile(path, "model file"));
  ExternalDataFiles external(ModelFolder(path));
  return ParseModel(bytes, path, &external);
}

}  // namespace lipsync::graph
