#include "kernel_report.h"

#include <cstdio>

namespace lipsync::cli {
namespace {

// The variant's time at `batch`, or a negative value when it was not timed there.
double MsAt(const KernelVariantReport& v, int64_t batch) {
  for (const auto& [b, ms] : v.ms) {
    if (b == batch) return ms;
  }
  return -1.0;
}

const KernelVariantReport* Find(const KernelGroupReport& g, const std::string& name) {
  for (const auto& v : g.variants) {
    if (v.name == name) return &v;
  }
  return nullptr;
}

}  // namespace

std::string KernelReportText(const KernelReport& report) {
  std::string text;
  char line[512];
  for (const KernelGroupReport& g : report.groups) {
    text += "kernels:    " + g.name + "\n";
    for (const auto& [batch, name] : g.chosen) {
      const KernelVariantReport* v = Find(g, name);
      const double ms = v ? MsAt(*v, batch) : -1.0;
      const double unfused = g.variants.empty() ? -1.0 : MsAt(g.variants[0], batch);
      std::snprintf(line, sizeof(line),
                    "              batch %-3lld %-36s %8.3f ms (unfused %.3f ms)\n",
                    static_cast<long long>(batch), name.c_str(), ms, unfused);
      text += line;
    }
    for (const KernelVariantReport& v : g.variants) {
      if (v.status != "ok") text += "              not used: " + v.name + ": " + v.status + "\n";
    }
  }
  for (const auto& [batch, count] : report.kernels_per_forward) {
    std::snprintf(line, sizeof(line), "kernels per forward pass at batch %lld: %d\n",
                  static_cast<long long>(batch), count);
    text += line;
  }
  if (!report.side_stream.empty()) text += "side stream: " + report.side_stream + "\n";
  return text;
}

nlohmann::json KernelReportJson(const KernelReport& report) {
  nlohmann::json groups = nlohmann::json::array();
  for (const KernelGroupReport& g : report.groups) {
    nlohmann::json variants = nlohmann::json::array();
    for (const KernelVariantReport& v : g.variants) {
      nlohmann::json ms = nlohmann::json::object();
      for (const auto& [batch, t] : v.ms) ms[std::to_string(batch)] = t;
      variants.push_back({{"name", v.name}, {"status", v.status}, {"ms", ms}});
    }
    nlohmann::json chosen = nlohmann::json::object();
    for (const auto& [batch, name] : g.chosen) chosen[std::to_string(batch)] = name;
    groups.push_back({{"group", g.name}, {"variants", variants}, {"chosen", chosen}});
  }
  nlohmann::json kernels = nlohmann::json::object();
  for (const auto& [batch, count] : report.kernels_per_forward) {
    kernels[std::to_string(batch)] = count;
  }
  return {
      {"groups", groups}, {"kernels_per_forward", kernels}, {"side_stream", report.side_stream}};
}

}  // namespace lipsync::cli
