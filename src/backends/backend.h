// The interface every execution backend implements, and the registry that creates them.
//
// The Engine validates inputs and output buffers before calling Run(), so a backend may assume
// that inputs match info().inputs (with the batch dimension filled in) and that outputs have the
// shapes of Engine::OutputShapes(). Run() may be called from several threads at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "lipsync/engine.h"

namespace lipsync {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Status Run(const std::vector<TensorView>& inputs,
                     const std::vector<MutableTensorView>& outputs) = 0;
};

struct LoadedBackend {
  ModelInfo info;  // filled by the backend: names, types, shapes, provider in use
  std::unique_ptr<Backend> backend;
};

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
