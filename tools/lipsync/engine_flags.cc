#include "engine_flags.h"

#include <cstdio>

namespace lipsync::cli {

void AddEngineFlags(CLI::App* cmd, EngineFlags* f, bool with_max_batch, bool model_required) {
  auto* model = cmd->add_option("--model,-m", f->model, "ONNX model file");
  if (model_required) model->required();
  cmd->add_option("--backend", f->backend, "ort | cuda | reference")->capture_default_str();
  cmd->add_option("--provider", f->provider,
                  "ONNX Runtime provider: cpu | cuda | tensorrt | dml (Windows)")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads, "CPU threads for one inference (0: one per core)")
      ->capture_default_str();
  cmd->add_option("--device", f->device, "GPU device id")->capture_default_str();
  cmd->add_option("--precision", f->precision, "fp32 | fp16 (GPU backends)")->capture_default_str();
  cmd->add_option("--graph-opt", f->graph_optimization, "disabled | basic | extended | all")
      ->capture_default_str();
  cmd->add_option("--engine-cache", f->engine_cache_dir, "TensorRT engine cache folder");
  cmd->add_flag("--cuda-graph", f->cuda_graph, "capture the forward pass as a CUDA graph");
  cmd->add_option("--cuda-kernels", f->cuda_kernels,
                  "backend cuda: unfused | auto (the fastest fused kernel that matched the "
                  "unfused steps at load) | fused (the first that matched)")
      ->capture_default_str();
  cmd->add_flag("--side-stream", f->side_stream,
                "backend cuda: run the audio branch on a second stream");
  cmd->add_flag("--allow-cpu-fallback", f->allow_cpu_fallback,
                "run on the CPU when the GPU provider is missing");
  if (with_max_batch) {
    cmd->add_option("--max-batch", f->max_batch, "largest batch accepted")->capture_default_str();
  }
  cmd->add_option("--ort-config", f->ort_config,
                  "ONNX Runtime session config entry KEY=VALUE (repeatable)");
}

Result<EngineOptions> ToEngineOptions(const EngineFlags& f) {
  EngineOptions o;
  o.backend = f.backend;
  o.provider = f.provider;
  o.intra_op_threads = f.threads;
  o.device_id = f.device;
  o.ort.engine_cache_dir = f.engine_cache_dir;
  o.ort.cuda_graph = f.cuda_graph;
  o.cuda.cuda_graph = f.cuda_graph;
  o.cuda.side_stream = f.side_stream;
  if (f.cuda_kernels == "auto") {
    o.cuda.kernels = CudaKernels::kAuto;
  } else if (f.cuda_kernels == "fused") {
    o.cuda.kernels = CudaKernels::kFused;
  } else if (f.cuda_kernels == "unfused") {
    o.cuda.kernels = CudaKernels::kUnfused;
  } else {
    return InvalidArgument("--cuda-kernels must be auto, fused or unfused, got '" + f.cuda_kernels +
                           "'");
  }
  o.ort.allow_cpu_fallback = f.allow_cpu_fallback;
  o.max_batch = f.max_batch;
  for (const auto& entry : f.ort_config) {
    const auto eq = entry.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("--ort-config needs KEY=VALUE, got '" + entry + "'");
    }
    o.ort.session_config.emplace_back(entry.substr(0, eq), entry.substr(eq + 1));
  }
  if (f.precision == "fp32" || f.precision == "float32") {
    o.precision = Precision::kFloat32;
  } else if (f.precision == "fp16" || f.precision == "float16") {
    o.precision = Precision::kFloat16;
  } else {
    return InvalidArgument("--precision must be fp32 or fp16, got '" + f.precision + "'");
  }
  const std::string& g = f.graph_optimization;
  if (g == "disabled")
    o.ort.graph_optimization = GraphOptimization::kDisabled;
  else if (g == "basic")
    o.ort.graph_optimization = GraphOptimization::kBasic;
  else if (g == "extended")
    o.ort.graph_optimization = GraphOptimization::kExtended;
  else if (g == "all")
    o.ort.graph_optimization = GraphOptimization::kAll;
  else
    return InvalidArgument("--graph-opt must be disabled, basic, extended or all, got '" + g + "'");
  return o;
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return 2;
}

}  // namespace lipsync::cli
