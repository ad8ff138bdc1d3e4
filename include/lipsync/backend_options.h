// Settings that belong to one backend. EngineOptions (engine.h) holds the common ones and one of
// these per backend; a backend reads only its own.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace lipsync {

enum class GraphOptimization { kDisabled, kBasic, kExtended, kAll };
enum class Precision { kFloat32, kFloat16 };

// Backend "ort": ONNX Runtime with the execution provider EngineOptions::provider.
struct OrtOptions {
  // When the requested GPU provider is missing, run on the CPU instead of failing.
  bool allow_cpu_fallback = false;
  int inter_op_threads = 1;
  GraphOptimization graph_optimization = GraphOptimization::kAll;
  std::string engine_cache_dir;  // TensorRT engine cache; empty: no cache
  bool cuda_graph = false;       // the CUDA / TensorRT provider's CUDA graph capture
  // ONNX Runtime's memory pattern: one block planned for all of a run's activations, per input
  // shape. Off, each operator's output comes from the arena as it runs: on the demo UNet on the
  // CPU, 30-40% less peak memory and 2-9% slower alone (docs/PERFORMANCE.md).
  bool memory_pattern = true;
  // Whether the CPU threads of a run spin while they wait for work (ONNX Runtime's default) or
  // wait idle. Spinning suits a process that only runs the model; where other work shares the
  // cores (render's stages, the server's requests and live sessions) it takes their time: the
  // renderer's UNet and `lipsync serve`'s engines wait idle. A "session.intra_op.allow_spinning"
  // entry in session_config wins over it.
  bool spinning = true;
  // Extra session configuration entries (key, value), e.g.
  // {"session.set_denormal_as_zero", "1"}; see onnxruntime_session_options_config_keys.h.
  std::vector<std::pair<std::string, std::string>> session_config;
};

// How the CUDA backend runs each group of steps one fused kernel can run: an inverted-residual
// block (expand 1x1, depthwise 3x3, project 1x1), with the upsample + concat before it and a
// 1x1 convolution after it where nothing else reads their tensors.
enum class CudaKernels {
  // At load, each fused kernel that can run the group is checked against the unfused steps on
  // random data and timed on this GPU; the fastest that matched runs it (ModelInfo::kernels).
  kAuto,
  kUnfused,  // the plan's steps one by one
  kFused,    // the first fused kernel that matched, whatever its speed (tests, measurements)
};

// Backend "cuda": lipsync's native CUDA kernels.
struct CudaOptions {
  // Capture each batch size's forward pass as a CUDA graph on first use and replay it after.
  bool cuda_graph = false;
  // Concurrent Run() calls each take a context (stream, activation arena, pinned staging); more
  // callers than this wait. Two or more let one batch upload while another computes.
  int max_contexts = 4;
  // Force the CUDA-core inverted-residual kernel on every block it fits, unchecked and untimed
  // (`kernels` below considers it too, checked and timed). Off by default: it multiplies on the
  // CUDA cores and made the whole model slower on an H200 than the unfused tensor-core steps
  // (docs/PERFORMANCE.md).
  bool fused_blocks = false;
  // Fused kernels (see CudaKernels); ignored when fused_blocks forces the CUDA-core kernel.
  // Unfused by default until the fused kernels have passed the GPU checks (cuda_fused_tests,
  // cuda_model_tests) on a GPU; kAuto opts in, and keeps only variants that match at load.
  CudaKernels kernels = CudaKernels::kUnfused;
  // Steps that depend only on one input (the UNet's audio branch) run on a second stream beside
  // the others, joining where their result is first read. Off by default for the same reason.
  bool side_stream = false;
};

// Backend "reference": the compiled plan run by plain CPU loops. It has no settings of its own
// (EngineOptions::intra_op_threads sets its threads).
struct ReferenceOptions {};

}  // namespace lipsync
