// Command-line flags shared by every subcommand that loads a model (infer, bench, check, serve).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "lipsync/engine.h"

namespace lipsync::cli {

struct EngineFlags {
  std::string model;
  std::string backend = "ort";
  std::string provider = "cpu";
  std::string precision = "fp32";
  std::string graph_optimization = "all";
  std::string engine_cache_dir;
  int threads = 0;
  int device = 0;
  int64_t max_batch = 64;
  bool cuda_graph = false;
  std::string cuda_kernels = "unfused";  // CudaOptions::kernels
  bool side_stream = false;              // CudaOptions::side_stream
  bool allow_cpu_fallback = false;
  std::vector<std::string> ort_config;  // KEY=VALUE
};

// Adds --model (required), --backend, --provider, --threads, --device, --precision, --graph-opt,
// --engine-cache, --cuda-graph, --cuda-kernels, --side-stream, --allow-cpu-fallback,
// --max-batch.
// `with_max_batch` false leaves --max-batch to the caller (serve uses it for its batcher);
// `model_required` false makes --model optional (render takes the model from the avatar).
void AddEngineFlags(CLI::App* cmd, EngineFlags* flags, bool with_max_batch = true,
                    bool model_required = true);
Result<EngineOptions> ToEngineOptions(const EngineFlags& flags);

// Prints "error: <status>" to stderr and returns the exit code for it (2).
int ReportError(const Status& status);

}  // namespace lipsync::cli
