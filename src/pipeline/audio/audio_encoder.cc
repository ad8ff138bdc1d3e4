// The AudioEncoder ([B,1,80,16] mel windows -> [B,512] embeddings) run through an Engine.
#include <algorithm>
#include <cstring>
#include <string>

#include "pipeline/audio/audio_internal.h"

namespace lipsync {
namespace {

// Any batch dimension (dynamic or fixed); the others as in `want`.
bool ShapeMatches(const Shape& declared, const Shape& want) {
  if (declared.size() != want.size()) return false;
  for (size_t d = 1; d < want.size(); ++d) {
    if (declared[d] != want[d]) return false;
  }
  return true;
}

// ONNX Runtime's CPU provider with the caller's threads, batch bound and checks.
EngineOptions OrtCpuOptions(const EngineOptions& options) {
  EngineOptions cpu;
  cpu.intra_op_threads = options.intra_op_threads;
  cpu.max_batch = options.max_batch;
  cpu.check_finite = options.check_finite;
  cpu.ort = options.ort;
  return cpu;
}

}  // namespace

Result<std::unique_ptr<AudioEncoder>> AudioEncoder::Create(const std::string& onnx_path,
                                                           const EngineOptions& options) {
  auto created = Engine::Create(onnx_path, options);
  std::string fallback_reason;
  if (!created.ok() && created.status().code() == StatusCode::kUnimplemented &&
      options.backend != "ort") {
    fallback_reason = "the " + options.backend + " backend cannot run it (" +
                      created.status().message() + "); ONNX Runtime's CPU provider does";
    created = Engine::Create(onnx_path, OrtCpuOptions(options));
  }
  if (!created.ok()) return created.status();
  std::unique_ptr<Engine> engine = std::move(*created);
  const ModelInfo& info = engine->info();
  const Shape window = {-1, 1, kMelBands, kMelWindowFrames};
  const Shape embedding = {-1, audio_internal::kEmbeddingSize};
  if (info.inputs.size() != 1 || info.outputs.size() != 1 ||
      info.inputs[0].dtype != DataType::kFloat32 || info.outputs[0].dtype != DataType::kFloat32 ||
      !ShapeMatches(info.inputs[0].shape, window) ||
      !ShapeMatches(info.outputs[0].shape, embedding)) {
    std::string got;
    for (const auto& t : info.inputs) got += (got.empty() ? "" : ", ") + ShapeToString(t.shape);
    got += " -> ";
    for (const auto& t : info.outputs) got += ShapeToString(t.shape) + " ";
    return InvalidArgument("model '" + onnx_path +
                           "' is not an audio encoder: expected one float32 input [N,1,80,16] "
                           "and one float32 output [N,512], it has " +
                           got);
  }
  return std::unique_ptr<AudioEncoder>(new AudioEncoder(std::move(engine), fallback_reason));
}

Result<Tensor> AudioEncoder::Encode(const Tensor& windows) {
  const Shape& shape = windows.shape();
  if (windows.dtype() != DataType::kFloat32 || shape.size() != 4 || shape[0] < 1 || shape[1] != 1 ||
      shape[2] != kMelBands || shape[3] != kMelWindowFrames) {
    return InvalidArgument("encoder windows: expected float32 [B,1,80,16] with B >= 1, got " +
                           std::string(DataTypeName(windows.dtype())) + " " +
                           ShapeToString(shape, false));
  }
  constexpr int64_t kWindow = kMelBands * kMelWindowFrames;
  constexpr int64_t kOut = audio_internal::kEmbeddingSize;
  const ModelInfo& info = engine_->info();
  const int64_t total = shape[0];
  const int64_t max_batch = std::max<int64_t>(1, info.max_batch);
  Tensor embeddings = Tensor::Uninitialized(DataType::kFloat32, {total, kOut});
  Tensor padded;  // a fixed-batch model gets its last, partial batch padded with zeros
  for (int64_t pos = 0; pos < total; pos += max_batch) {
    const int64_t n = std::min(max_batch, total - pos);
    const float* src = windows.data_as<float>() + pos * kWindow;
    int64_t run = n;
    if (!info.dynamic_batch && n < max_batch) {
      padded = Tensor(DataType::kFloat32, {max_batch, 1, kMelBands, kMelWindowFrames});
      std::memcpy(padded.data(), src, sizeof(float) * n * kWindow);
      src = padded.data_as<float>();
      run = max_batch;
    }
    TensorView in{DataType::kFloat32, {run, 1, kMelBands, kMelWindowFrames}, src};
    LIPSYNC_ASSIGN_OR_RETURN(std::vector<Tensor> out, engine_->Run({in}));
    if (out.size() != 1 || out[0].element_count() != run * kOut) {
      return Internal("audio encoder returned an unexpected output for batch " +
                      std::to_string(run));
    }
    std::memcpy(embeddings.data_as<float>() + pos * kOut, out[0].data(), sizeof(float) * n * kOut);
  }
  return embeddings;
}

}  // namespace lipsync
