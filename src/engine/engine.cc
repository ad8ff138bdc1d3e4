#include "lipsync/engine.h"

#include <cmath>
#include <filesystem>

#include "backends/backend.h"

namespace lipsync {

std::vector<std::string> AvailableBackends() {
  std::vector<std::string> names;
  for (const auto& entry : RegisteredBackends()) names.emplace_back(entry.name);
  return names;
}

std::vector<OrtProviderStatus> ProbeOrtProviders() { return ProbeOrtProviderLibraries(); }

std::vector<std::string> AvailableOrtProviders() {
  std::vector<std::string> names;
  for (const auto& p : ProbeOrtProviderLibraries()) {
    if (p.usable) names.push_back(p.name);
  }
  return names;
}

Engine::Engine(std::string path, EngineOptions options, ModelInfo info,
               std::unique_ptr<Backend> backend)
    : path_(std::move(path)),
      options_(std::move(options)),
      info_(std::move(info)),
      backend_(std::move(backend)) {}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Create(const std::string& model_path,
                                               const EngineOptions& options) {
  std::error_code ec;
  if (!std::filesystem::exists(model_path, ec)) {
    return NotFound("model file '" + model_path + "' does not exist");
  }
  if (std::filesystem::is_directory(model_path, ec)) {
    return InvalidArgument("model path '" + model_path + "' is a directory, not an ONNX file");
  }
  if (options.max_batch < 1) {
    return InvalidArgument("max_batch must be at least 1, got " +
                           std::to_string(options.max_batch));
  }
  if (options.intra_op_threads < 0 || options.inter_op_threads < 0) {
    return InvalidArgument("thread counts must not be negative");
  }
  const BackendEntry* chosen = nullptr;
  std::string known;
  for (const auto& entry : RegisteredBackends()) {
    if (options.backend == entry.name) chosen = &entry;
    known += (known.empty() ? "" : ", ") + std::string(entry.name);
  }
  if (!chosen) {
    return InvalidArgument("unknown backend '" + options.backend + "' (this build has: " + known +
                           ")");
  }
  LIPSYNC_ASSIGN_OR_RETURN(LoadedBackend loaded, chosen->create(model_path, options));
  loaded.info.path = model_path;
  if (loaded.info.backend.empty()) loaded.info.backend = chosen->name;
  return std::unique_ptr<Engine>(
      new Engine(model_path, options, std::move(loaded.info), std::move(loaded.backend)));
}

Result<size_t> Engine::InputIndex(const std::string& name) const {
  for (size_t i = 0; i < info_.inputs.size(); ++i) {
    if (info_.inputs[i].name == name) return i;
  }
  std::string names;
  for (const auto& in : info_.inputs) names += (names.empty() ? "'" : ", '") + in.name + "'";
  return NotFound("model has no input '" + name + "' (inputs: " + names + ")");
}

Result<int64_t> Engine::ValidateInputs(const std::vector<TensorView>& inputs) const {
  if (inputs.size() != info_.inputs.size()) {
    return InvalidArgument("expected " + std::to_string(info_.inputs.size()) + " inputs, got " +
                           std::to_string(inputs.size()));
  }
  int64_t batch = -1;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorInfo& want = info_.inputs[i];
    const TensorView& got = inputs[i];
    const std::string what = "input '" + want.name + "'";
    if (got.dtype != want.dtype) {
      return InvalidArgument(what + ": expected " + DataTypeName(want.dtype) + ", got " +
                             DataTypeName(got.dtype));
    }
    bool shape_ok = got.shape.size() == want.shape.size();
    for (size_t d = 0; shape_ok && d < got.shape.size(); ++d) {
      shape_ok = got.shape[d] >= 1 && (want.shape[d] < 0 || want.shape[d] == got.shape[d]);
    }
    if (!shape_ok) {
      return InvalidArgument(what + ": expected shape " + ShapeToString(want.shape) + ", got " +
                             ShapeToString(got.shape, false));
    }
    if (batch >= 0 && got.shape[0] != batch) {
      return InvalidArgument(what + ": batch " + std::to_string(got.shape[0]) +
                             " differs from the batch of the inputs before it (" +
                             std::to_string(batch) + ")");
    }
    batch = got.shape[0];
    if (!got.data) return InvalidArgument(what + ": no data");
    if (options_.check_finite) LIPSYNC_RETURN_IF_ERROR(CheckFinite(got, what));
  }
  if (batch > info_.max_batch) {
    return InvalidArgument("batch " + std::to_string(batch) + " exceeds the maximum of " +
                           std::to_string(info_.max_batch));
  }
  return batch;
}

Result<std::vector<Shape>> Engine::OutputShapes(int64_t batch) const {
  if (batch < 1 || batch > info_.max_batch) {
    return InvalidArgument("batch " + std::to_string(batch) + " is outside 1.." +
                           std::to_string(info_.max_batch));
  }
  std::vector<Shape> shapes;
  for (const auto& out : info_.outputs) {
    Shape s = out.shape;
    for (size_t d = 0; d < s.size(); ++d) {
      if (s[d] >= 0) continue;
      if (d != 0) {
        return Unimplemented("output '" + out.name + "' has a dynamic dimension " +
                             std::to_string(d) + " other than the batch");
      }
      s[d] = batch;
    }
    shapes.push_back(std::move(s));
  }
  return shapes;
}

Status Engine::Run(const std::vector<TensorView>& inputs,
                   const std::vector<MutableTensorView>& outputs) {
  LIPSYNC_ASSIGN_OR_RETURN(int64_t batch, ValidateInputs(inputs));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<Shape> shapes, OutputShapes(batch));
  if (outputs.size() != shapes.size()) {
    return InvalidArgument("expected " + std::to_string(shapes.size()) + " output buffers, got " +
                           std::to_string(outputs.size()));
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const TensorInfo& want = info_.outputs[i];
    if (outputs[i].dtype != want.dtype || outputs[i].shape != shapes[i] || !outputs[i].data) {
      return InvalidArgument("output buffer '" + want.name + "': expected " +
                             DataTypeName(want.dtype) + " " + ShapeToString(shapes[i]) + ", got " +
                             DataTypeName(outputs[i].dtype) + " " +
                             ShapeToString(outputs[i].shape, false));
    }
  }
  return backend_->Run(inputs, outputs);
}

Result<std::vector<Tensor>> Engine::Run(const std::vector<TensorView>& inputs) {
  LIPSYNC_ASSIGN_OR_RETURN(int64_t batch, ValidateInputs(inputs));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<Shape> shapes, OutputShapes(batch));
  std::vector<Tensor> outputs;
  std::vector<MutableTensorView> views;
  for (size_t i = 0; i < shapes.size(); ++i) {
    outputs.emplace_back(info_.outputs[i].dtype, shapes[i]);
    views.push_back(outputs.back().mutable_view());
  }
  LIPSYNC_RETURN_IF_ERROR(backend_->Run(inputs, views));
  return outputs;
}

Status CheckFinite(const TensorView& tensor, const std::string& what) {
  const int64_t n = ElementCount(tensor.shape);
  auto report = [&](int64_t i, float v) {
    return InvalidArgument(what + ": element " + std::to_string(i) + " is " +
                           (std::isnan(v) ? "NaN" : "Inf") + "; inputs must be finite");
  };
  if (tensor.dtype == DataType::kFloat32) {
    const float* p = tensor.as<float>();
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(p[i])) return report(i, p[i]);
    }
  } else if (tensor.dtype == DataType::kFloat16) {
    const uint16_t* p = tensor.as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) {
      if ((p[i] & 0x7c00u) == 0x7c00u) return report(i, HalfToFloat(p[i]));
    }
  }
  return Status::Ok();
}

}  // namespace lipsync
