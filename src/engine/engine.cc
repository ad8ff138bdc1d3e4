#include "lipsync/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "backends/backend.h"
#include "core/platform.h"

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

bool BackendCapabilities::Accepts(MemoryType memory) const {
  switch (memory) {
    case MemoryType::kHost:
      return host_memory;
    case MemoryType::kPinnedHost:
      return pinned_host_memory;
    case MemoryType::kDevice:
      return device_memory;
  }
  return false;
}

namespace {

// A backend call whose exceptions become this call's error: a failed allocation is this batch's
// RESOURCE_EXHAUSTED, not the end of the process.
template <typename Call>
Status Guarded(Call call) {
  try {
    return call();
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("out of memory while running the model");
  } catch (const std::exception& e) {
    return Internal(std::string("the backend failed: ") + e.what());
  }
}

// The frame form needs two inputs, one [N,6,S,S] float32 (S a known face size) and one float32
// audio input, and one [N,3,S,S] float32 output.
FrameFormInfo DetectFrameForm(const ModelInfo& info) {
  FrameFormInfo form;
  if (info.inputs.size() != 2 || info.outputs.size() != 1) {
    form.why_not = "the model does not have two inputs and one output";
    return form;
  }
  form.why_not = "the model has no float32 [N,6,S,S] visual input beside a float32 audio input";
  for (size_t v = 0; v < 2; ++v) {
    const Shape& s = info.inputs[v].shape;
    if (s.size() != 4 || s[1] != 6 || s[2] != s[3] || info.inputs[v].dtype != DataType::kFloat32 ||
        info.inputs[1 - v].dtype != DataType::kFloat32) {
      continue;
    }
    auto layout = FaceLayout::ForInputSize(static_cast<int>(s[2]));
    if (!layout.ok()) {
      form.why_not = layout.status().message();
      continue;
    }
    const Shape& out = info.outputs[0].shape;
    if (out.size() != 4 || out[1] != 3 || out[2] != s[2] || out[3] != s[3] ||
        info.outputs[0].dtype != DataType::kFloat32) {
      form.why_not = "the output is not float32 [N,3," + std::to_string(s[2]) + "," +
                     std::to_string(s[2]) + "]";
      continue;
    }
    form.supported = true;
    form.why_not.clear();
    form.visual_index = v;
    form.audio_index = 1 - v;
    form.layout = *layout;
  }
  return form;
}

}  // namespace

Engine::Engine(std::string path, EngineOptions options, ModelInfo info,
               BackendCapabilities capabilities, std::unique_ptr<Backend> backend)
    : path_(std::move(path)),
      options_(std::move(options)),
      info_(std::move(info)),
      capabilities_(capabilities),
      frame_form_(DetectFrameForm(info_)),
      backend_(std::move(backend)) {}

Engine::~Engine() = default;

EngineMemory Engine::memory() const { return backend_->Memory(); }

EngineOptions OptionsPerRun(EngineOptions options, int runs) {
  if (runs <= 1) return options;
  if (options.intra_op_threads > 0) {
    options.intra_op_threads = std::max(1, options.intra_op_threads / runs);
  }
  if (options.backend == "ort" && options.provider == "cpu") options.ort.memory_pattern = false;
  return options;
}

Result<std::unique_ptr<Engine>> Engine::Create(const std::string& model_path,
                                               const EngineOptions& options) {
  std::error_code ec;
  const std::filesystem::path file = platform::PathFromUtf8(model_path);
  if (!std::filesystem::exists(file, ec)) {
    return NotFound("model file '" + model_path + "' does not exist");
  }
  if (std::filesystem::is_directory(file, ec)) {
    return InvalidArgument("model path '" + model_path + "' is a directory, not an ONNX file");
  }
  if (options.max_batch < 1) {
    return InvalidArgument("max_batch must be at least 1, got " +
                           std::to_string(options.max_batch));
  }
  if (options.intra_op_threads < 0 || options.ort.inter_op_threads < 0) {
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
  return std::unique_ptr<Engine>(new Engine(model_path, options, std::move(loaded.info),
                                            loaded.capabilities, std::move(loaded.backend)));
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
    LIPSYNC_RETURN_IF_ERROR(CheckMemory(got.memory, got.device_id, what));
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
    LIPSYNC_RETURN_IF_ERROR(
        CheckMemory(outputs[i].memory, outputs[i].device_id, "output buffer '" + want.name + "'"));
  }
  return Guarded([&] { return backend_->Run(inputs, outputs); });
}

Status Engine::CheckMemory(MemoryType memory, int device_id, const std::string& what) const {
  const std::string runs_on =
      "the '" + info_.backend + "' backend (provider '" + info_.provider + "')";
  if (!capabilities_.Accepts(memory)) {
    std::string accepted;
    for (MemoryType m : {MemoryType::kHost, MemoryType::kPinnedHost, MemoryType::kDevice}) {
      if (capabilities_.Accepts(m))
        accepted += (accepted.empty() ? "" : ", ") + std::string(MemoryTypeName(m));
    }
    return InvalidArgument(what + " is in " + MemoryTypeName(memory) + " memory, which " + runs_on +
                           " cannot read (it takes: " + accepted + ")");
  }
  if (memory == MemoryType::kDevice && device_id != capabilities_.device_id) {
    return InvalidArgument(what + " is on GPU " + std::to_string(device_id) + ", but " + runs_on +
                           " runs on GPU " + std::to_string(capabilities_.device_id));
  }
  if (memory == MemoryType::kDevice && options_.check_finite) {
    return InvalidArgument(what +
                           " is in device memory, which the finite-value check cannot "
                           "read; turn the check off or pass host memory");
  }
  return Status::Ok();
}

Result<int64_t> Engine::ValidateFaces(const FaceBatch& batch,
                                      const MutableTensorView& output) const {
  if (!frame_form_.supported) {
    return InvalidArgument("this model does not take faces: " + frame_form_.why_not);
  }
  const FaceLayout& layout = frame_form_.layout;
  const int64_t s = layout.inner_size, c = layout.crop_size;
  const TensorView& faces = batch.faces;
  if (faces.dtype != DataType::kUInt8 || faces.shape.size() != 4 || faces.shape[0] < 1 ||
      faces.shape[1] != faces.shape[2] || (faces.shape[1] != s && faces.shape[1] != c) ||
      faces.shape[3] != 3) {
    return InvalidArgument("faces: expected uint8 [N," + std::to_string(s) + "," +
                           std::to_string(s) + ",3] or [N," + std::to_string(c) + "," +
                           std::to_string(c) + ",3] BGR, got " + DataTypeName(faces.dtype) + " " +
                           ShapeToString(faces.shape, false));
  }
  if (!faces.data) return InvalidArgument("faces: no data");
  const int64_t n = faces.shape[0];
  if (n > info_.max_batch) {
    return InvalidArgument("batch " + std::to_string(n) + " exceeds the maximum of " +
                           std::to_string(info_.max_batch));
  }
  LIPSYNC_RETURN_IF_ERROR(CheckMemory(faces.memory, faces.device_id, "faces"));
  // The audio input goes through the same checks as in Run(), with the faces' batch.
  const TensorInfo& audio_info = info_.inputs[frame_form_.audio_index];
  const std::string audio_what = "audio input '" + audio_info.name + "'";
  Shape audio_want = audio_info.shape;
  audio_want[0] = n;
  if (batch.audio.dtype != audio_info.dtype || batch.audio.shape != audio_want) {
    return InvalidArgument(audio_what + ": expected " + DataTypeName(audio_info.dtype) + " " +
                           ShapeToString(audio_want) + " for " + std::to_string(n) +
                           " faces, got " + DataTypeName(batch.audio.dtype) + " " +
                           ShapeToString(batch.audio.shape, false));
  }
  if (!batch.audio.data) return InvalidArgument(audio_what + ": no data");
  LIPSYNC_RETURN_IF_ERROR(CheckMemory(batch.audio.memory, batch.audio.device_id, audio_what));
  if (options_.check_finite) LIPSYNC_RETURN_IF_ERROR(CheckFinite(batch.audio, audio_what));
  const Shape images{n, s, s, 3}, planes{n, 3, s, s};
  const bool bytes_ok = output.dtype == DataType::kUInt8 && output.shape == images;
  const bool floats_ok = output.dtype == DataType::kFloat32 && output.shape == planes;
  if (!bytes_ok && !floats_ok) {
    return InvalidArgument("frame output: expected uint8 " + ShapeToString(images) +
                           " (BGR faces) or float32 " + ShapeToString(planes) + ", got " +
                           DataTypeName(output.dtype) + " " + ShapeToString(output.shape, false));
  }
  if (!output.data) return InvalidArgument("frame output: no data");
  LIPSYNC_RETURN_IF_ERROR(CheckMemory(output.memory, output.device_id, "frame output"));
  return n;
}

Status Engine::RunFrames(const FaceBatch& batch, const MutableTensorView& output) {
  LIPSYNC_ASSIGN_OR_RETURN(int64_t n, ValidateFaces(batch, output));
  if (info_.dynamic_batch == false && n != info_.max_batch) {
    return InvalidArgument("the model takes batches of exactly " + std::to_string(info_.max_batch) +
                           ", got " + std::to_string(n) + " faces");
  }
  return Guarded([&] { return backend_->RunFrames(frame_form_, batch, output); });
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
  LIPSYNC_RETURN_IF_ERROR(Guarded([&] { return backend_->Run(inputs, views); }));
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
