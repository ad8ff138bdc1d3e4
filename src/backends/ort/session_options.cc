#include "backends/ort/session_options.h"

#include <onnxruntime_session_options_config_keys.h>

#include <algorithm>

namespace lipsync {
namespace {

GraphOptimizationLevel ToOrtLevel(GraphOptimization level) {
  switch (level) {
    case GraphOptimization::kDisabled:
      return ORT_DISABLE_ALL;
    case GraphOptimization::kBasic:
      return ORT_ENABLE_BASIC;
    case GraphOptimization::kExtended:
      return ORT_ENABLE_EXTENDED;
    case GraphOptimization::kAll:
      return ORT_ENABLE_ALL;
  }
  return ORT_ENABLE_ALL;
}

}  // namespace

Ort::SessionOptions BaseSessionOptions(const EngineOptions& o) {
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(o.intra_op_threads);
  so.SetInterOpNumThreads(o.ort.inter_op_threads);
  so.SetGraphOptimizationLevel(ToOrtLevel(o.ort.graph_optimization));
  so.SetExecutionMode(ORT_SEQUENTIAL);
  if (!o.ort.memory_pattern) so.DisableMemPattern();
  so.AddConfigEntry(kOrtSessionOptionsConfigUseEnvAllocators, "1");
  // The caller's own entry for spinning wins over the option.
  const bool spin_given =
      std::any_of(o.ort.session_config.begin(), o.ort.session_config.end(), [](const auto& entry) {
        return entry.first == kOrtSessionOptionsConfigAllowIntraOpSpinning;
      });
  if (!o.ort.spinning && !spin_given) {
    so.AddConfigEntry(kOrtSessionOptionsConfigAllowIntraOpSpinning, "0");
  }
  for (const auto& [key, value] : o.ort.session_config) {
    so.AddConfigEntry(key.c_str(), value.c_str());
  }
  return so;
}

}  // namespace lipsync
