// Reads an ONNX model file into plain structs (no protobuf types leak out of onnx_import.cc).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lipsync/status.h"

namespace lipsync::graph {

// A constant tensor (initializer, Constant node value or attribute). Floating-point types are held
// as float in `floats`; integer and bool types as int64 in `ints`.
struct OnnxTensor {
  std::string name;
  int32_t elem_type = 0;  // onnx::TensorProto::DataType
  std::vector<int64_t> dims;
  bool is_float = false;
  std::vector<float> floats;
  std::vector<int64_t> ints;

  int64_t element_count() const;
};

struct OnnxAttribute {
  std::string name;
  int32_t type = 0;  // onnx::AttributeProto::AttributeType
  int64_t i = 0;
  float f = 0.0f;
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::vector<OnnxTensor> tensors;  // one for type TENSOR
};

struct OnnxNode {
  std::string name;
  std::string op_type;
  std::string domain;
  std::vector<std::string> inputs;  // "" marks an omitted optional input
  std::vector<std::string> outputs;
  std::map<std::string, OnnxAttribute> attributes;

  bool has(const std::string& attr) const { return attributes.count(attr) > 0; }
  int64_t get_int(const std::string& attr, int64_t fallback) const;
  float get_float(const std::string& attr, float fallback) const;
  std::string get_string(const std::string& attr, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const std::string& attr) const;
  // "'name' (OpType)" for error messages.
  std::string describe() const;
};

// A graph input or output: element type and dims (-1 for symbolic or unknown dims).
struct OnnxValueInfo {
  std::string name;
  int32_t elem_type = 0;
  std::vector<int64_t> dims;
};

struct OnnxModel {
  std::string path;
  int64_t opset = 0;  // default-domain opset
  std::string producer_name;
  std::string producer_version;
  std::vector<OnnxValueInfo> inputs;  // without initializers listed as inputs
  std::vector<OnnxValueInfo> outputs;
  std::map<std::string, OnnxTensor> initializers;
  std::vector<OnnxNode> nodes;  // topological order, as ONNX requires
};

// NotFound for a missing file; DataLoss for a corrupt or truncated one (or a missing or short
// external data file); InvalidArgument for external data outside the model's folder;
// Unimplemented for unsupported tensor types. Float16 and bfloat16 tensors are widened to float.
Result<OnnxModel> LoadOnnxModel(const std::string& path);
// The same from bytes already in memory (`origin` names them in messages); a model with external
// data is FailedPrecondition here, since there is no folder to find its files in.
Result<OnnxModel> ParseOnnxModel(const std::string& bytes, const std::string& origin);

}  // namespace lipsync::graph
