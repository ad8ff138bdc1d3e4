#include "backends/backend.h"

namespace lipsync {

#ifdef LIPSYNC_HAVE_REFERENCE_BACKEND
Result<LoadedBackend> CreateReferenceBackend(const std::string& model_path,
                                             const EngineOptions& options);
#endif
#ifdef LIPSYNC_HAVE_CUDA
Result<LoadedBackend> CreateCudaBackend(const std::string& model_path,
                                        const EngineOptions& options);
#endif

const std::vector<BackendEntry>& RegisteredBackends() {
  static const std::vector<BackendEntry> kBackends = {
      {"ort", &CreateOrtBackend},
#ifdef LIPSYNC_HAVE_CUDA
      {"cuda", &CreateCudaBackend},
#endif
#ifdef LIPSYNC_HAVE_REFERENCE_BACKEND
      {"reference", &CreateReferenceBackend},
#endif
  };
  return kBackends;
}

}  // namespace lipsync
