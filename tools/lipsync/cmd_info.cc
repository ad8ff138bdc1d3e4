// `lipsync info`: what a model takes and gives, and what this build can run it on.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "engine_flags.h"
#include "kernel_report.h"

namespace lipsync::cli {
namespace {

std::string Join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

nlohmann::json TensorsToJson(const std::vector<TensorInfo>& tensors) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& t : tensors) {
    list.push_back({{"name", t.name}, {"dtype", DataTypeName(t.dtype)}, {"shape", t.shape}});
  }
  return list;
}

nlohmann::json ProvidersToJson(const std::vector<OrtProviderStatus>& providers) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : providers) {
    list.push_back({{"name", p.name}, {"usable", p.usable}, {"missing", p.missing}});
  }
  return list;
}

int RunInfo(const EngineFlags& flags, bool json) {
  auto options = ToEngineOptions(flags);
  if (!options.ok()) return ReportError(options.status());
  auto engine = Engine::Create(flags.model, *options);
  if (!engine.ok()) return ReportError(engine.status());
  const ModelInfo& info = (*engine)->info();
  if (json) {
    nlohmann::json j = {{"model", info.path},
                        {"opset", info.opset},
                        {"producer", info.producer},
                        {"backend", info.backend},
                        {"provider", info.provider},
                        {"fallback_reason", info.fallback_reason},
                        {"dynamic_batch", info.dynamic_batch},
                        {"max_batch", info.max_batch},
                        {"inputs", TensorsToJson(info.inputs)},
                        {"outputs", TensorsToJson(info.outputs)},
                        {"backends_available", AvailableBackends()},
                        {"ort_providers_available", AvailableOrtProviders()},
                        {"ort_providers", ProvidersToJson(ProbeOrtProviders())}};
    if (!info.kernels.groups.empty() || !info.kernels.side_stream.empty()) {
      j["kernels"] = KernelReportJson(info.kernels);
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:      %s\n", info.path.c_str());
  std::printf("opset:      %lld\n", static_cast<long long>(info.opset));
  std::printf("producer:   %s\n", info.producer.c_str());
  std::printf("batch:      %s (max %lld)\n", info.dynamic_batch ? "dynamic" : "fixed",
              static_cast<long long>(info.max_batch));
  for (const auto& t : info.inputs) {
    std::printf("input:      %-14s %-8s %s\n", t.name.c_str(), DataTypeName(t.dtype),
                ShapeToString(t.shape).c_str());
  }
  for (const auto& t : info.outputs) {
    std::printf("output:     %-14s %-8s %s\n", t.name.c_str(), DataTypeName(t.dtype),
                ShapeToString(t.shape).c_str());
  }
  std::printf("running on: backend %s, provider %s\n", info.backend.c_str(), info.provider.c_str());
  if (!info.fallback_reason.empty()) {
    std::printf("fallback:   %s\n", info.fallback_reason.c_str());
  }
  std::fputs(KernelReportText(info.kernels).c_str(), stdout);
  std::printf("backends available in this build: %s\n", Join(AvailableBackends()).c_str());
  std::printf("ONNX Runtime providers available:  %s\n", Join(AvailableOrtProviders()).c_str());
  for (const auto& p : ProbeOrtProviders()) {
    if (!p.usable) std::printf("  %s unavailable: %s\n", p.name.c_str(), p.missing.c_str());
  }
  return 0;
}

}  // namespace

void AddInfoCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("info", "Show a model's inputs, outputs, opset and providers");
  auto flags = std::make_shared<EngineFlags>();
  auto json = std::make_shared<bool>(false);
  AddEngineFlags(cmd, flags.get());
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([=] { *exit_code = RunInfo(*flags, *json); });
}

}  // namespace lipsync::cli
