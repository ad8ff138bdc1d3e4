// `lipsync infer`: the one-frame test. A face image (and audio features) in, the predicted face
// out.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "commands.h"
#include "engine_flags.h"
#include "lipsync/face.h"
#include "lipsync/npy.h"
#include "random_inputs.h"

namespace lipsync::cli {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct InferArgs {
  EngineFlags engine;
  std::string face;
  std::string audio;
  std::string out;
  uint64_t seed = 0;
};

// The model's visual input is the one with 6 channels; the other is the audio window.
Result<std::pair<size_t, size_t>> FindVisualAndAudio(const ModelInfo& info) {
  if (info.inputs.size() != 2) {
    return InvalidArgument(
        "expected a lip-sync model with 2 inputs (visual, audio), this one has " +
        std::to_string(info.inputs.size()));
  }
  for (size_t v = 0; v < 2; ++v) {
    const Shape& s = info.inputs[v].shape;
    if (s.size() == 4 && s[1] == 6 && s[2] == s[3] && s[2] > 0) return std::make_pair(v, 1 - v);
  }
  return InvalidArgument(
      "neither input has the visual shape [N,6,S,S]: " + ShapeToString(info.inputs[0].shape) +
      ", " + ShapeToString(info.inputs[1].shape));
}

Result<Tensor> LoadAudio(const std::string& path, const TensorInfo& want) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor audio, LoadNpy(path));
  Shape item(want.shape.begin() + 1, want.shape.end());
  Shape with_batch = want.shape;
  with_batch[0] = 1;
  if (audio.dtype() != DataType::kFloat32) {
    return InvalidArgument("audio features '" + path + "': expected float32, got " +
                           DataTypeName(audio.dtype()));
  }
  if (audio.shape() != item && audio.shape() != with_batch) {
    return InvalidArgument("audio features '" + path + "': expected shape " + ShapeToString(item) +
                           " or " + ShapeToString(with_batch) + ", got " +
                           ShapeToString(audio.shape()));
  }
  Tensor batched(DataType::kFloat32, with_batch);
  std::memcpy(batched.data(), audio.data(), audio.byte_size());
  LIPSYNC_RETURN_IF_ERROR(CheckFinite(batched.view(), "audio features '" + path + "'"));
  return batched;
}

int RunInfer(const InferArgs& args) {
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  auto t0 = Clock::now();
  auto engine = Engine::Create(args.engine.model, *options);
  if (!engine.ok()) return ReportError(engine.status());
  const double load_ms = MsSince(t0);
  const ModelInfo& info = (*engine)->info();
  auto io = FindVisualAndAudio(info);
  if (!io.ok()) return ReportError(io.status());
  const auto [vi, ai] = *io;
  const int size = static_cast<int>(info.inputs[vi].shape[2]);
  auto layout = FaceLayout::ForInputSize(size);
  if (!layout.ok()) return ReportError(layout.status());

  t0 = Clock::now();
  auto image = LoadImage(args.face);
  if (!image.ok()) return ReportError(image.status());
  auto inner = PrepareFace(*image, *layout);
  if (!inner.ok()) return ReportError(inner.status());
  std::vector<Tensor> inputs(2);
  inputs[vi] = Tensor(DataType::kFloat32, {1, 6, size, size});
  FillVisualInput(inner->bgr.data(), *layout, inputs[vi].data_as<float>());
  if (args.audio.empty()) {
    Shape shape = info.inputs[ai].shape;
    shape[0] = 1;
    inputs[ai] = Tensor(info.inputs[ai].dtype, shape);
    FillRandom(inputs[ai], args.seed);
  } else {
    auto audio = LoadAudio(args.audio, info.inputs[ai]);
    if (!audio.ok()) return ReportError(audio.status());
    inputs[ai] = std::move(*audio);
  }
  const double pre_ms = MsSince(t0);

  t0 = Clock::now();
  auto outputs = (*engine)->Run(Views(inputs));
  if (!outputs.ok()) return ReportError(outputs.status());
  const double infer_ms = MsSince(t0);

  const Tensor& out = (*outputs)[0];
  if (out.shape() != Shape{1, 3, size, size} || out.dtype() != DataType::kFloat32) {
    return ReportError(InvalidArgument("model output " + ShapeToString(out.shape()) +
                                       " is not a float32 face [1,3," + std::to_string(size) + "," +
                                       std::to_string(size) + "]"));
  }
  Image face{size, size, std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
  OutputToImage(out.data_as<float>(), size, face.bgr.data());
  Status saved = SaveImage(args.out, face);
  if (!saved.ok()) return ReportError(saved);
  std::printf("wrote %s (%dx%d)\n", args.out.c_str(), size, size);
  std::printf("model load %.1f ms, preprocess %.2f ms, inference %.2f ms (first run, %s/%s)\n",
              load_ms, pre_ms, infer_ms, info.backend.c_str(), info.provider.c_str());
  return 0;
}

}  // namespace

void AddInferCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("infer", "Run one frame: face image (+ audio features) to image");
  auto args = std::make_shared<InferArgs>();
  AddEngineFlags(cmd, &args->engine);
  cmd->add_option("--face", args->face,
                  "face crop image (320x320 inner, 328x328 crop, or any size)")
      ->required();
  cmd->add_option("--audio", args->audio, "audio feature window .npy, float32 [32,16,16]");
  cmd->add_option("--seed", args->seed, "seed for random audio features when --audio is absent")
      ->capture_default_str();
  cmd->add_option("--out,-o", args->out, "output image")->required();
  cmd->callback([=] { *exit_code = RunInfer(*args); });
}

}  // namespace lipsync::cli
