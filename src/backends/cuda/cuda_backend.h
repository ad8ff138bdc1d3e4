// The native CUDA backend ("cuda"): compiles the ONNX model into the plan (graph/plan.h) and runs
// it with lipsync's own kernels in float32 or float16 (EngineOptions::precision).
//
// Per Run(): the inputs are copied into pinned staging memory, uploaded, converted to NHWC, the
// plan's steps run on one stream, and the outputs come back the same way. Each concurrent Run()
// takes its own context (stream, arena, staging) from a small pool, so callers never share
// activations. With CudaOptions::cuda_graph, each context captures its whole forward pass
// (the device work; the copies stay outside) as a CUDA graph per batch size and input form on
// first use and replays it after. At load, the groups of steps a fused kernel can run (inverted-
// residual blocks, small 1x1 convolutions; fused_groups.h) get the fastest kernel that matched the
// unfused steps on this GPU (autotune.h, CudaOptions::kernels), and the audio branch runs on a
// second stream (CudaOptions::side_stream). RunFrames takes BGR uint8 faces and converts them on
// the GPU.
#pragma once

#include <string>

#include "backends/backend.h"

namespace lipsync {

Result<LoadedBackend> CreateCudaBackend(const std::string& model_path,
                                        const EngineOptions& options);

namespace cuda {

// OK when `device_id` names a GPU this build can run on; otherwise Unavailable, with a message
// that starts "no CUDA device: " when there is no usable driver or GPU at all.
Status CheckCudaDevice(int device_id);

}  // namespace cuda
}  // namespace lipsync
