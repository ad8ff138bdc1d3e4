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
//   // Or the frame form: BGR faces in, BGR faces out; the backend masks, scales and converts.
//   lipsync::Tensor faces(lipsync::DataType::kUInt8, {1, 320, 320, 3});
//   lipsync::Tensor result(lipsync::DataType::kUInt8, {1, 320, 320, 3});
//   lipsync::Status s = (*engine)->RunFrames({faces.view(), audio.view()}, result.mutable_view());
//
// Threading: an Engine is loaded once and may be shared; Run() may be called from several threads
// at once. Each call uses its own output buffers, so results never mix between callers. Create()
// and destruction must not race with Run().
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lipsync/backend_options.h"
#include "lipsync/face_layout.h"
#include "lipsync/memory.h"
#include "lipsync/status.h"
#include "lipsync/tensor.h"

namespace lipsync {

// One model input or output as the model declares it; dynamic dimensions are -1.
struct TensorInfo {
  std::string name;
  DataType dtype = DataType::kFloat32;
  Shape shape;
};

// How a backend that chooses among kernels at load runs the model (backend "cuda", see
// CudaOptions::kernels); empty for the others.
struct KernelVariantReport {
  std::string name;    // "unfused", "tensor-core 8x16 +resize-concat", ...
  std::string status;  // "ok", or why it is not used ("mismatch: ...", "unsupported: ...")
  std::vector<std::pair<int64_t, double>> ms;  // (batch, median milliseconds) where timed
};
struct KernelGroupReport {
  std::string name;                           // e.g. "up5.conv.double_conv.0 (steps 91-94)"
  std::vector<KernelVariantReport> variants;  // [0]: the unfused steps
  std::vector<std::pair<int64_t, std::string>> chosen;  // (tuning batch, variant run there)
};
struct KernelReport {
  std::vector<KernelGroupReport> groups;
  std::vector<std::pair<int64_t, int>> kernels_per_forward;  // (tuning batch, kernel launches)
  std::string side_stream;  // the steps run on a second stream, or why none are
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
  KernelReport kernels;         // backend "cuda": the kernels it chose at load
};

// Settings every backend understands; each backend's own settings are in its member struct.
struct EngineOptions {
  // "ort": ONNX Runtime; "cuda": lipsync's native CUDA backend (when built with CUDA);
  // "reference": lipsync's plain CPU executor of the compiled plan (slow, for checking).
  std::string backend = "ort";
  // ONNX Runtime execution provider: "cpu", "cuda" or "tensorrt" (backend "ort" only).
  std::string provider = "cpu";
  int device_id = 0;         // GPU backends and providers
  int intra_op_threads = 0;  // CPU threads per inference; 0: one per physical core
  // GPU backends and providers: kFloat16 enables TensorRT FP16 / the CUDA backend's FP16 kernels.
  Precision precision = Precision::kFloat32;
  int64_t max_batch = 64;  // upper bound on N for dynamic-batch models
  // Reject inputs holding NaN or Inf (costs one pass over the inputs; host memory only).
  bool check_finite = false;

  OrtOptions ort;
  CudaOptions cuda;
  ReferenceOptions reference;
};

// The options of each of `runs` engines that run the same model at once (render's model runs,
// bench's --runs): its share of intra_op_threads (0 stays 0, the backend's default) and, on ONNX
// Runtime's CPU provider, no memory pattern, whose block planned per engine would hold all of a
// run's activations at once. One run: `options` as they are.
EngineOptions OptionsPerRun(EngineOptions options, int runs);

// What the loaded backend accepts, so callers can hand it the memory it reads best.
struct BackendCapabilities {
  bool host_memory = true;         // pageable host buffers
  bool pinned_host_memory = true;  // page-locked host buffers
  bool device_memory = false;      // GPU buffers on `device_id`
  int device_id = -1;              // the GPU it runs on; -1 on the CPU
  bool frames_on_device = false;   // RunFrames() converts faces on the GPU
  // Run() calls that usefully run at once: a GPU backend uploads one batch while another computes.
  int overlapping_runs = 1;

  bool Accepts(MemoryType memory) const;
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

// The frame form: whether the model takes faces directly (RunFrames) and how.
struct FrameFormInfo {
  bool supported = false;  // one float32 [N,6,S,S] visual input, one audio input, one output
  std::string why_not;     // when not supported
  size_t visual_index = 0, audio_index = 1;
  FaceLayout layout;  // S = layout.inner_size
};

// A batch of faces in the frame form. Both views may be in any memory the backend accepts.
struct FaceBatch {
  // uint8 [N, S, S, 3] BGR inner faces, or [N, C, C, 3] crops (C = layout.crop_size) whose
  // centre is used, rows top to bottom.
  TensorView faces;
  // The model's audio input for the same N frames, as declared ([N,32,16,16] float32).
  TensorView audio;
};

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

  // What the backend accepts (memory types, on-device frame conversion).
  const BackendCapabilities& capabilities() const { return capabilities_; }
  const FrameFormInfo& frame_form() const { return frame_form_; }

  // The frame form end to end: faces and audio in; the mouth mask, scaling to [0,1] and layout are
  // done by the backend (on the GPU for the CUDA backend), and `output` receives either
  //   uint8 [N, S, S, 3]: BGR faces, x255 clamped and truncated as OutputToImage() does, or
  //   float32 [N, 3, S, S]: the model's output as Run() returns it.
  // Results equal FillVisualInput() + Run() (+ OutputToImage()) on the CPU backends.
  Status RunFrames(const FaceBatch& batch, const MutableTensorView& output);

  // The memory the backend holds for this model now (lipsync/memory.h); working memory on the
  // host is the process-wide pool's, shared by every engine.
  EngineMemory memory() const;

 private:
  Engine(std::string path, EngineOptions options, ModelInfo info, BackendCapabilities capabilities,
         std::unique_ptr<Backend> backend);
  Status CheckMemory(MemoryType memory, int device_id, const std::string& what) const;
  Result<int64_t> ValidateFaces(const FaceBatch& batch, const MutableTensorView& output) const;

  std::string path_;
  EngineOptions options_;
  ModelInfo info_;
  BackendCapabilities capabilities_;
  FrameFormInfo frame_form_;
  std::unique_ptr<Backend> backend_;
};

// Fails with InvalidArgument naming `what` and the first bad element if a float tensor holds NaN
// or Inf. Other types always pass.
Status CheckFinite(const TensorView& tensor, const std::string& what);

}  // namespace lipsync
