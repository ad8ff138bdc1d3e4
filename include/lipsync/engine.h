// lipsync engine: runs a lip-sync UNet exported to ONNX on a chosen backend.
//
// Usage:
//
//   #include "lipsync/engine.h"
//
//   lipsync::EngineOptions options;          // backend "ort", provider "cpu" by default
//   options.intra_op_threads = 2;
//   auto engine = lipsync::Engine::Create("model.onnx", options);
//   if (!engine.ok()) { fprintf(stderr, "%s\n", engine.status().ToString().c_str()); return 1; }
//
//   // Inputs in the model's order (see info().inputs): visual [N,6,320,320], audio [N,32,16,16].
//   lipsync::Tensor visual(lipsync::DataType::kFloat32, {1, 6, 320, 320});
//   lipsync::Tensor audio(lipsync::DataType::kFloat32, {1, 32, 16, 16});
//   auto outputs = (*engine)->Run({visual.view(), audio.view()});
//   if (!outputs.ok()) { ... outputs.status().message() names the problem ... }
//   const float* face = (*outputs)[0].data_as<float>();  // [1,3,320,320], BGR in [0,1]
//
// Threading: an Engine is loaded once and may be shared; Run() may be called from several threads
// at once. Each call uses its own output buffers, so results never mix between callers. Create()
// and destruction must not race with Run().
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lipsync/status.h"
#include "lipsync/tensor.h"

namespace lipsync {

// One model input or output as the model declares it; dynamic dimensions are -1.
struct TensorInfo {
  std::string name;
  DataType dtype = DataType::kFloat32;
  Shape shape;
};

struct ModelInfo {
  std::string path;
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  int64_t opset = 0;            // default-domain opset the model imports
  std::string producer;         // e.g. "pytorch 1.13.1"
  std::string backend;          // backend that runs it: "ort", "cuda", "reference"
  std::string provider;         // execution provider in use: "cpu", "cuda", "tensorrt"
  std::string fallback_reason;  // why the requested GPU provider was replaced by the CPU, if it was
  bool dynamic_batch = false;   // the first dimension of every input is -1
  int64_t max_batch = 0;        // largest batch Run() accepts
};

enum class GraphOptimization { kDisabled, kBasic, kExtended, kAll };
enum class Precision { kFloat32, kFloat16 };

struct EngineOptions {
  // "ort": ONNX Runtime; "cuda": lipsync's native CUDA backend (when built with CUDA);
  // "reference": lipsync's plain CPU executor of the compiled plan (slow, for checking).
  std::string backend = "ort";
  // ONNX Runtime execution provider: "cpu", "cuda" or "tensorrt".
  std::string provider = "cpu";
  // When the requested GPU provider is missing, run on CPU instead of failing.
  bool allow_cpu_fallback = false;
  int device_id = 0;
  int intra_op_threads = 0;  // 0: the runtime's default (one per physical core)
  int inter_op_threads = 1;
  GraphOptimization graph_optimization = GraphOptimization::kAll;
  // GPU providers: kFloat16 enables TensorRT FP16 / the CUDA backend's FP16 kernels.
  Precision precision = Precision::kFloat32;
  std::string engine_cache_dir;  // TensorRT engine cache; empty: no cache
  bool cuda_graph = false;       // capture the forward pass as a CUDA graph (GPU providers)
  int64_t max_batch = 64;        // upper bound on N for dynamic-batch models
  // Reject inputs holding NaN or Inf (costs one pass over the inputs).
  bool check_finite = false;
  // Extra ONNX Runtime session configuration entries (key, value), e.g.
  // {"session.intra_op.allow_spinning", "0"}; see onnxruntime_session_options_config_keys.h.
  std::vector<std::pair<std::string, std::string>> ort_session_config;
};

// Names of the backends and providers this build can run ("ort", "cuda", ...).
std::vector<std::string> AvailableBackends();
// An ONNX Runtime execution provider this build knows of, and whether it can be loaded here.
struct OrtProviderStatus {
  std::string name;     // "cpu", "cuda", "tensorrt", or ONNX Runtime's own name for others
  bool usable = false;  // its libraries (and theirs) load on this machine
  std::string missing;  // when not usable: what is missing, e.g. a library and where it was sought
};
// Every provider the ONNX Runtime library was built with, probed for what it needs at run time.
std::vector<OrtProviderStatus> ProbeOrtProviders();
// The names of the usable ones ("cpu" always).
std::vector<std::string> AvailableOrtProviders();

class Backend;

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> Create(const std::string& model_path,
                                                const EngineOptions& options = {});
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelInfo& info() const { return info_; }
  const EngineOptions& options() const { return options_; }

  // Index of the input called `name`, or NotFound.
  Result<size_t> InputIndex(const std::string& name) const;

  // Checks inputs against the model's declared names, types and shapes; returns the batch size.
  Result<int64_t> ValidateInputs(const std::vector<TensorView>& inputs) const;
  // Output shapes for a batch of `batch` items.
  Result<std::vector<Shape>> OutputShapes(int64_t batch) const;

  // Runs one batch into caller-provided output buffers (shapes from OutputShapes()). No copies of
  // inputs or outputs are made on the CPU path.
  Status Run(const std::vector<TensorView>& inputs, const std::vector<MutableTensorView>& outputs);
  // Runs one batch and returns newly allocated outputs.
  Result<std::vector<Tensor>> Run(const std::vector<TensorView>& inputs);

 private:
  Engine(std::string path, EngineOptions options, ModelInfo info, std::unique_ptr<Backend> backend);

  std::string path_;
  EngineOptions options_;
  ModelInfo info_;
  std::unique_ptr<Backend> backend_;
};

// Fails with InvalidArgument naming `what` and the first bad element if a float tensor holds NaN
// or Inf. Other types always pass.
Status CheckFinite(const TensorView& tensor, const std::string& what);

}  // namespace lipsync
