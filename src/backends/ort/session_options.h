// The ONNX Runtime session options an engine's OrtOptions stand for (threads, optimisation level,
// memory pattern, spinning and the caller's own config entries), before any execution provider.
#pragma once

#include <onnxruntime_cxx_api.h>

#include "lipsync/engine.h"

namespace lipsync {

Ort::SessionOptions BaseSessionOptions(const EngineOptions& options);

}  // namespace lipsync
