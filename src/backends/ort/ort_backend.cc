// The ONNX Runtime backend: one Ort::Session per engine, shared by all threads (Session::Run is
// thread-safe). Inputs and outputs are wrapped in place as Ort::Values over the caller's buffers,
// so the CPU path copies nothing. With a GPU provider, views in device memory are bound where they
// are through an IoBinding, so ONNX Runtime neither copies them to nor from the host.
#include <onnx/onnx_pb.h>
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_session_options_config_keys.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <mutex>
#include <new>

#include "backends/backend.h"
#include "backends/ort/onnx_header.h"
#include "backends/ort/session_options.h"
#include "core/platform.h"
#include "graph/external_data.h"
#include "lipsync/memory.h"

namespace lipsync {
namespace {

// Every session's CPU memory comes from lipsync's host pool (lipsync/memory.h) instead of an
// arena per session: a session's arena keeps the largest run's activations for as long as the
// session lives, so N loaded models held N working sets. Allocations made while a session loads
// (Reserve) are its weights; those made by Run are working memory.
struct PoolAllocator : OrtAllocator {
  PoolAllocator() : info(Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault)) {
    version = ORT_API_VERSION;
    // ONNX Runtime does not check what a custom allocator returns; a refusal is thrown, as its
    // own arena does, and ends the run with an error.
    OrtAllocator::Alloc = [](OrtAllocator*, size_t size) {
      void* p = HostMemory().Allocate(size, HostMemoryPool::Kind::kWorking);
      if (!p) throw std::bad_alloc();
      return p;
    };
    OrtAllocator::Reserve = [](OrtAllocator*, size_t size) {
      void* p = HostMemory().Allocate(size, HostMemoryPool::Kind::kWeights);
      if (!p) throw std::bad_alloc();
      return p;
    };
    OrtAllocator::Free = [](OrtAllocator*, void* p) { HostMemory().Free(p); };
    OrtAllocator::Info = [](const OrtAllocator* self) -> const OrtMemoryInfo* {
      return static_cast<const PoolAllocator*>(self)->info;
    };
  }
  Ort::MemoryInfo info;
};

// One process-wide ORT environment: creating it is costly and ORT expects a single one. The pool
// allocator is registered with it for the sessions to share.
Ort::Env& SharedEnv() {
  static Ort::Env* env = [] {
    auto* e = new Ort::Env(ORT_LOGGING_LEVEL_WARNING, "lipsync");
    static PoolAllocator allocator;
    Ort::ThrowOnError(Ort::GetApi().RegisterAllocator(*e, &allocator));
    return e;
  }();
  return *env;
}

Status FromOrtException(const Ort::Exception& e, const std::string& context) {
  const std::string msg = context + ": " + e.what();
  switch (e.GetOrtErrorCode()) {
    case ORT_NO_SUCHFILE:
      return NotFound(msg);
    case ORT_INVALID_PROTOBUF:
    case ORT_INVALID_GRAPH:
      return DataLoss(msg);
    case ORT_INVALID_ARGUMENT:
      return InvalidArgument(msg);
    case ORT_NOT_IMPLEMENTED:
      return Unimplemented(msg);
    case ORT_NO_MODEL:
      return DataLoss(msg);
    default:
      return Internal(msg);
  }
}

Result<DataType> FromOrtType(ONNXTensorElementDataType t, const std::string& name) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT:
      return DataType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return DataType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8:
      return DataType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
      return DataType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
      return DataType::kInt64;
    default:
      return Unimplemented("tensor '" + name + "' has ONNX element type " +
                           std::to_string(static_cast<int>(t)) +
                           ", which lipsync does not support");
  }
}

ONNXTensorElementDataType ToOrtType(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DataType::kFloat16:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DataType::kUInt8:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DataType::kInt32:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DataType::kInt64:
      return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

// The folder holding the ONNX Runtime library, where ORT looks for its provider libraries.
std::string OrtLibraryDir() {
  std::string dir = platform::FolderOfLibraryWith(reinterpret_cast<const void*>(&OrtGetApiBase));
  return dir.empty() ? "the folder of " + platform::SharedLibraryName("onnxruntime") : dir;
}

// Empty when `library` and the shared provider bridge beside libonnxruntime load; else what fails.
std::string ProviderLibraryProblem(const std::string& library) {
  const std::filesystem::path dir = platform::PathFromUtf8(OrtLibraryDir());
  for (const std::string& name :
       {platform::SharedLibraryName("onnxruntime_providers_shared"), library}) {
    const std::filesystem::path path = dir / platform::PathFromUtf8(name);
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return name + " is not in " + OrtLibraryDir();
    // Loading (not running) shows whether its CUDA/TensorRT dependencies are on this machine.
    const std::string why = platform::LibraryLoadProblem(platform::PathToUtf8(path));
    if (!why.empty()) return name + " does not load: " + why;
  }
  return "";
}

Status MissingProvider(const std::string& provider, const std::string& library,
                       std::string detail) {
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
  if (provider == "dml") {
    return Unavailable(
        "ONNX Runtime could not start the DirectML execution provider (" + detail +
        "). DirectML needs Windows 10 1903 or later, a DirectX 12 GPU with its driver, and "
        "DirectML.dll beside onnxruntime.dll. Use --provider cpu, or --allow-cpu-fallback to "
        "run on the CPU instead");
  }
  return Unavailable("ONNX Runtime could not load the " + provider + " execution provider (" +
                     detail + "). It needs " + library + " and " +
                     platform::SharedLibraryName("onnxruntime_providers_shared") +
                     " (with their CUDA/TensorRT "
                     "dependencies) beside libonnxruntime in " +
                     OrtLibraryDir() +
                     ": build against an ONNX Runtime GPU release with ONNXRUNTIME_ROOT=<release> "
                     "or copy its provider libraries there; or allow falling back to the CPU");
}

// Adds the requested GPU provider to `so`. Returns Unavailable when the provider cannot be loaded.
Status AppendProvider(Ort::SessionOptions& so, const EngineOptions& o) {
  const OrtApi& api = Ort::GetApi();
  const std::string device = std::to_string(o.device_id);
  try {
    if (o.provider == "cuda") {
      OrtCUDAProviderOptionsV2* cuda = nullptr;
      Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
      std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> guard(
          cuda, api.ReleaseCUDAProviderOptions);
      const char* keys[] = {"device_id", "enable_cuda_graph", "cudnn_conv_algo_search"};
      const std::string graph = o.ort.cuda_graph ? "1" : "0";
      const char* values[] = {device.c_str(), graph.c_str(), "EXHAUSTIVE"};
      Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, keys, values, 3));
      so.AppendExecutionProvider_CUDA_V2(*cuda);
    } else if (o.provider == "tensorrt") {
      OrtTensorRTProviderOptionsV2* trt = nullptr;
      Ort::ThrowOnError(api.CreateTensorRTProviderOptions(&trt));
      std::unique_ptr<OrtTensorRTProviderOptionsV2, decltype(api.ReleaseTensorRTProviderOptions)>
          guard(trt, api.ReleaseTensorRTProviderOptions);
      std::vector<std::string> k = {"device_id", "trt_fp16_enable", "trt_cuda_graph_enable"};
      std::vector<std::string> v = {device, o.precision == Precision::kFloat16 ? "1" : "0",
                                    o.ort.cuda_graph ? "1" : "0"};
      if (!o.ort.engine_cache_dir.empty()) {
        k.insert(k.end(), {"trt_engine_cache_enable", "trt_engine_cache_path"});
        v.insert(v.end(), {"1", o.ort.engine_cache_dir});
      }
      std::vector<const char*> kp, vp;
      for (size_t i = 0; i < k.size(); ++i) {
        kp.push_back(k[i].c_str());
        vp.push_back(v[i].c_str());
      }
      Ort::ThrowOnError(api.UpdateTensorRTProviderOptions(trt, kp.data(), vp.data(), kp.size()));
      so.AppendExecutionProvider_TensorRT_V2(*trt);
      // Nodes TensorRT cannot take fall to CUDA rather than to the CPU.
      OrtCUDAProviderOptionsV2* cuda = nullptr;
      Ort::ThrowOnError(api.CreateCUDAProviderOptions(&cuda));
      std::unique_ptr<OrtCUDAProviderOptionsV2, decltype(api.ReleaseCUDAProviderOptions)> cguard(
          cuda, api.ReleaseCUDAProviderOptions);
      const char* ck[] = {"device_id"};
      const char* cv[] = {device.c_str()};
      Ort::ThrowOnError(api.UpdateCUDAProviderOptions(cuda, ck, cv, 1));
      so.AppendExecutionProvider_CUDA_V2(*cuda);
    } else if (o.provider == "dml") {
      // Without a device, DirectML fails at session start with a bare HRESULT; say why first.
      if (std::string no_device = platform::Direct3D12DeviceProblem(); !no_device.empty()) {
        return MissingProvider("dml", "DirectML.dll", no_device);
      }
      // DirectML runs the graph as one sequence and plans its own memory.
      so.DisableMemPattern();
      so.SetExecutionMode(ORT_SEQUENTIAL);
      so.AppendExecutionProvider("DML", {{"device_id", device}});
    }
  } catch (const Ort::Exception& e) {
    const std::string lib = o.provider == "dml" ? "DirectML.dll"
                            : o.provider == "cuda"
                                ? platform::SharedLibraryName("onnxruntime_providers_cuda")
                                : platform::SharedLibraryName("onnxruntime_providers_tensorrt");
    return MissingProvider(o.provider, lib, e.what());
  }
  return Status::Ok();
}

Result<std::vector<TensorInfo>> DescribeTensors(Ort::Session& session, bool inputs) {
  Ort::AllocatorWithDefaultOptions allocator;
  const size_t n = inputs ? session.GetInputCount() : session.GetOutputCount();
  std::vector<TensorInfo> infos;
  for (size_t i = 0; i < n; ++i) {
    TensorInfo info;
    info.name = (inputs ? session.GetInputNameAllocated(i, allocator)
                        : session.GetOutputNameAllocated(i, allocator))
                    .get();
    Ort::TypeInfo type = inputs ? session.GetInputTypeInfo(i) : session.GetOutputTypeInfo(i);
    if (type.GetONNXType() != ONNX_TYPE_TENSOR) {
      return Unimplemented("'" + info.name + "' is not a tensor");
    }
    auto tensor = type.GetTensorTypeAndShapeInfo();
    LIPSYNC_ASSIGN_OR_RETURN(info.dtype, FromOrtType(tensor.GetElementType(), info.name));
    info.shape = tensor.GetShape();
    for (auto& d : info.shape) d = d < 0 ? -1 : d;  // symbolic dims read as -1 already
    if (!inputs && info.shape.empty()) {
      // No declared shape reads as a scalar, and every run would then fail on its buffer.
      return InvalidArgument(
          "output " + Quoted(info.name) +
          " declares no shape; the engine needs each output's dimensions "
          "(shape inference, e.g. onnx.shape_inference.infer_shapes, adds them)");
    }
    infos.push_back(std::move(info));
  }
  return infos;
}

class OrtBackend final : public Backend {
 public:
  OrtBackend(std::unique_ptr<Ort::Session> session, const ModelInfo& info, int device_id,
             EngineMemory held)
      : session_(std::move(session)),
        memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
        device_id_(device_id),
        held_(held) {
    for (const auto& t : info.inputs) input_names_.push_back(t.name);
    for (const auto& t : info.outputs) output_names_.push_back(t.name);
    for (const auto& s : input_names_) input_name_ptrs_.push_back(s.c_str());
    for (const auto& s : output_names_) output_name_ptrs_.push_back(s.c_str());
    for (size_t o = 0; o < output_names_.size(); ++o) {
      const auto in = std::find(input_names_.begin(), input_names_.end(), output_names_[o]);
      if (in != input_names_.end()) passed_through_.emplace_back(o, in - input_names_.begin());
    }
  }

  Status Run(const std::vector<TensorView>& inputs,
             const std::vector<MutableTensorView>& outputs) override {
    const auto on_device = [](const auto& v) { return v.memory == MemoryType::kDevice; };
    const bool bind = std::any_of(inputs.begin(), inputs.end(), on_device) ||
                      std::any_of(outputs.begin(), outputs.end(), on_device);
    const int64_t refusals = HostMemory().stats().refused_total;
    try {
      std::vector<Ort::Value> in, out;
      in.reserve(inputs.size());
      out.reserve(outputs.size());
      for (const auto& t : inputs) {
        in.push_back(Ort::Value::CreateTensor(MemoryOf(t.memory), const_cast<void*>(t.data),
                                              t.byte_size(), t.shape.data(), t.shape.size(),
                                              ToOrtType(t.dtype)));
      }
      for (const auto& t : outputs) {
        out.push_back(Ort::Value::CreateTensor(MemoryOf(t.memory), t.data, t.byte_size(),
                                               t.shape.data(), t.shape.size(), ToOrtType(t.dtype)));
      }
      if (!bind) {
        session_->Run(run_options_, input_name_ptrs_.data(), in.data(), in.size(),
                      output_name_ptrs_.data(), out.data(), out.size());
        return CopyPassedThroughInputs(inputs, outputs);
      }
      // Device memory: bound in place; the provider reads and writes it without host copies.
      Ort::IoBinding binding(*session_);
      for (size_t i = 0; i < in.size(); ++i) binding.BindInput(input_name_ptrs_[i], in[i]);
      for (size_t i = 0; i < out.size(); ++i) binding.BindOutput(output_name_ptrs_[i], out[i]);
      session_->Run(run_options_, binding);
      binding.SynchronizeOutputs();
    } catch (const Ort::Exception& e) {
      if (HostMemory().stats().refused_total > refusals) return PoolRefused(e.what());
      return FromOrtException(e, "ONNX Runtime Run failed");
    }
    return CopyPassedThroughInputs(inputs, outputs);
  }

  EngineMemory Memory() const override { return held_; }

 private:
  // ONNX Runtime leaves the caller's buffer of an output that is a graph input (a model that
  // passes an input through) unwritten: such outputs are copied from their input here.
  Status CopyPassedThroughInputs(const std::vector<TensorView>& inputs,
                                 const std::vector<MutableTensorView>& outputs) const {
    for (const auto& [out, in] : passed_through_) {
      const TensorView& from = inputs[in];
      const MutableTensorView& to = outputs[out];
      if (from.memory == MemoryType::kDevice || to.memory == MemoryType::kDevice) {
        return Unimplemented("output " + Quoted(output_names_[out]) +
                             " is the model's input itself; in device memory it is not copied");
      }
      std::memcpy(to.data, from.data, to.byte_size());
    }
    return Status::Ok();
  }

  static Status PoolRefused(const std::string& what) {
    const HostMemoryStats s = HostMemory().stats();
    return ResourceExhausted(
        "the run needs more working memory than the host memory limit leaves (" +
        std::to_string(s.working_in_use >> 20) + " MiB in use, limit " +
        std::to_string(s.limit >> 20) + " MiB): " + what);
  }

  // Host and pinned host views are CPU memory to ONNX Runtime; device views live on the GPU the
  // provider runs on (the engine checked the device id).
  const Ort::MemoryInfo& MemoryOf(MemoryType memory) {
    if (memory != MemoryType::kDevice) return memory_;
    std::call_once(device_memory_once_, [&] {
      device_memory_ = std::make_unique<Ort::MemoryInfo>("Cuda", OrtDeviceAllocator, device_id_,
                                                         OrtMemTypeDefault);
    });
    return *device_memory_;
  }

  std::unique_ptr<Ort::Session> session_;
  Ort::MemoryInfo memory_;
  const int device_id_;
  const EngineMemory held_;
  std::once_flag device_memory_once_;
  std::unique_ptr<Ort::MemoryInfo> device_memory_;
  Ort::RunOptions run_options_;
  std::vector<std::string> input_names_, output_names_;
  std::vector<const char*> input_name_ptrs_, output_name_ptrs_;
  std::vector<std::pair<size_t, size_t>> passed_through_;  // (output, the input it is)
};

Result<std::string> ReadModelFile(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, platform::ReadWholeFile(path, "model file"));
  if (bytes.empty()) return DataLoss("model file '" + path + "' is empty");
  return bytes;
}

}  // namespace

std::vector<OrtProviderStatus> ProbeOrtProviderLibraries() {
  std::vector<std::string> built;
  try {
    built = Ort::GetAvailableProviders();
  } catch (const Ort::Exception&) {
    built = {"CPUExecutionProvider"};
  }
  std::vector<OrtProviderStatus> out;
  for (const auto& p : built) {
    OrtProviderStatus status;
    if (p == "CPUExecutionProvider") {
      out.push_back({"cpu", true, ""});
      continue;
    }
    // ORT's core library lists a provider when it was built to know it; the provider itself
    // lives in a separate library that must be present, with its own dependencies.
    std::string library;
    if (p == "CUDAExecutionProvider") {
      status.name = "cuda";
      library = platform::SharedLibraryName("onnxruntime_providers_cuda");
    } else if (p == "TensorrtExecutionProvider") {
      status.name = "tensorrt";
      library = platform::SharedLibraryName("onnxruntime_providers_tensorrt");
    } else if (p == "DmlExecutionProvider") {
      // Part of onnxruntime.dll; it needs DirectML.dll and a DirectX 12 device at session start.
      status.name = "dml";
      status.missing = platform::LibraryLoadProblem(
          platform::PathToUtf8(platform::PathFromUtf8(OrtLibraryDir()) / "DirectML.dll"));
      if (status.missing.empty()) status.missing = platform::Direct3D12DeviceProblem();
      status.usable = status.missing.empty();
      out.push_back(status);
      continue;
    } else {
      status.name = p;
      status.missing = "lipsync does not use this provider";
      out.push_back(status);
      continue;
    }
    status.missing = ProviderLibraryProblem(library);
    status.usable = status.missing.empty();
    out.push_back(status);
  }
  return out;
}

Result<LoadedBackend> CreateOrtBackend(const std::string& model_path, const EngineOptions& o) {
  if (o.provider != "cpu" && o.provider != "cuda" && o.provider != "tensorrt" &&
      o.provider != "dml") {
    return InvalidArgument("unknown provider '" + o.provider +
                           "' (use cpu, cuda, tensorrt or dml)");
  }
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, ReadModelFile(model_path));
  SharedEnv();  // ORT's logger must exist before provider options are made
  auto parsed = ReadOnnxHeader(bytes);
  if (!parsed.ok()) return parsed.status().WithContext("model '" + model_path + "'");
  const OnnxHeader& header = *parsed;
  // ONNX Runtime reads external data itself, from the model's folder since it is given the path;
  // the same location rules as the native importer apply before it opens anything.
  // ONNX Runtime keeps its initializers outside the allocator it is given, so the files' size
  // stands for the weights it holds.
  int64_t weight_bytes = static_cast<int64_t>(bytes.size());
  {
    onnx::ModelProto proto;
    if (proto.ParseFromString(bytes)) {
      int64_t data_bytes = 0;
      LIPSYNC_RETURN_IF_ERROR(graph::CheckExternalData(proto, model_path, &data_bytes));
      weight_bytes += data_bytes;
    }
  }
  bytes.clear();
  bytes.shrink_to_fit();

  ModelInfo info;
  info.backend = "ort";
  info.provider = o.provider;
  info.opset = header.opset;
  info.producer =
      header.producer_name + (header.producer_version.empty() ? "" : " " + header.producer_version);
  try {
    Ort::SessionOptions so = BaseSessionOptions(o);
    if (o.provider != "cpu") {
      Status added = AppendProvider(so, o);
      if (!added.ok()) {
        if (!o.ort.allow_cpu_fallback) return added;
        info.provider = "cpu";
        info.fallback_reason = added.message();
        so = BaseSessionOptions(o);
      }
    }
    // ORTCHAR_T paths: wide on Windows, which the UTF-8 path converts to.
    const std::filesystem::path native = platform::PathFromUtf8(model_path);
    std::unique_ptr<Ort::Session> session;
    try {
      session = std::make_unique<Ort::Session>(SharedEnv(), native.c_str(), so);
    } catch (const Ort::Exception& e) {
      // DirectML finds out at session start that no DirectX 12 device can run it.
      if (info.provider != "dml") throw;
      Status missing = MissingProvider("dml", "DirectML.dll", e.what());
      if (!o.ort.allow_cpu_fallback) return missing;
      info.provider = "cpu";
      info.fallback_reason = missing.message();
      session = std::make_unique<Ort::Session>(SharedEnv(), native.c_str(), BaseSessionOptions(o));
    }
    LIPSYNC_ASSIGN_OR_RETURN(info.inputs, DescribeTensors(*session, true));
    LIPSYNC_ASSIGN_OR_RETURN(info.outputs, DescribeTensors(*session, false));
    if (info.inputs.empty()) return InvalidArgument("model '" + model_path + "' has no inputs");
    info.dynamic_batch = std::all_of(info.inputs.begin(), info.inputs.end(), [](const auto& t) {
      return !t.shape.empty() && t.shape[0] < 0;
    });
    if (info.dynamic_batch) {
      info.max_batch = o.max_batch;
    } else {
      info.max_batch = info.inputs[0].shape.empty() ? 1 : info.inputs[0].shape[0];
    }
    BackendCapabilities caps;
    // The CUDA and TensorRT providers read device memory; DirectML takes host buffers.
    if (info.provider == "cuda" || info.provider == "tensorrt") {
      caps.device_memory = true;
      caps.device_id = o.device_id;
    }
    EngineMemory held;
    (info.provider == "cpu" ? held.host_weights : held.device_weights) = weight_bytes;
    auto backend = std::make_unique<OrtBackend>(std::move(session), info, o.device_id, held);
    return LoadedBackend{std::move(info), caps, std::move(backend)};
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, "cannot load model '" + model_path + "'");
  }
}

}  // namespace lipsync
