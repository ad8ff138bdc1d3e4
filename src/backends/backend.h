// The interface every execution backend implements, and the registry that creates them.
//
// The Engine validates inputs and output buffers before calling Run(), so a backend may assume
// that inputs match info().inputs (with the batch dimension filled in) and that outputs have the
// shapes of Engine::OutputShapes(), and that every view's memory type is one the backend's
// capabilities accept. Run() and RunFrames() may be called from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/engine.h"
#include "lipsync/memory.h"

namespace lipsync {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Status Run(const std::vector<TensorView>& inputs,
                     const std::vector<MutableTensorView>& outputs) = 0;

  // The frame form (Engine::RunFrames), validated by the engine: `batch` items, faces of
  // `face_size` (inner or crop size) square, output uint8 NHWC BGR or float32 NCHW. The default
  // builds the visual input on the host with FillVisualInput() into one batch buffer, calls Run()
  // and converts the output with OutputToImage(); backends that can do better override it.
  virtual Status RunFrames(const FrameFormInfo& form, const FaceBatch& batch,
                           const MutableTensorView& output);

  // What the backend holds now (its weights; on a GPU also its per-run arenas).
  virtual EngineMemory Memory() const { return {}; }
};

struct LoadedBackend {
  ModelInfo info;  // filled by the backend: names, types, shapes, provider in use
  BackendCapabilities capabilities;
  std::unique_ptr<Backend> backend;
};

// Helpers for backends that run the frame form on the host.
// Rows of the inner face of frame `index` start at the returned pointer, `row_stride` bytes apart.
const uint8_t* InnerFace(const FrameFormInfo& form, const TensorView& faces, int64_t index,
                         size_t* row_stride);

using BackendFactory = Result<LoadedBackend> (*)(const std::string& model_path,
                                                 const EngineOptions& options);

struct BackendEntry {
  const char* name;
  BackendFactory create;
};

// Backends compiled into this build, in preference order.
const std::vector<BackendEntry>& RegisteredBackends();

// Each backend's factory; defined in its own directory.
Result<LoadedBackend> CreateOrtBackend(const std::string& model_path, const EngineOptions& options);
std::vector<OrtProviderStatus> ProbeOrtProviderLibraries();

}  // namespace lipsync
