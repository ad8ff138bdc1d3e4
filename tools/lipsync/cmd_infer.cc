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
  const FrameFormInfo& form = (*engine)->frame_form();
  if (!form.supported) {
    return ReportError(
        InvalidArgument("'" + args.engine.model +
                        "' is not a lip-sync model this command can run: " + form.why_not));
  }
  const int size = form.layout.inner_size;
  const TensorInfo& audio_info = info.inputs[form.audio_index];

  // Reading and cropping the face; the engine does the rest of the pre-processing (RunFrames).
  t0 = Clock::now();
  auto image = LoadImage(args.face);
  if (!image.ok()) return ReportError(image.status());
  auto inner = PrepareFace(*image, form.layout);
  if (!inner.ok()) return ReportError(inner.status());
  Tensor faces = Tensor::Uninitialized(DataType::kUInt8, {1, size, size, 3});
  std::memcpy(faces.data(), inner->bgr.data(), faces.byte_size());
  Tensor audio;
  if (args.audio.empty()) {
    Shape shape = audio_info.shape;
    shape[0] = 1;
    audio = Tensor(audio_info.dtype, shape);
    FillRandom(audio, args.seed);
  } else {
    auto loaded = LoadAudio(args.audio, audio_info);
    if (!loaded.ok()) return ReportError(loaded.status());
    audio = std::move(*loaded);
  }
  const double pre_ms = MsSince(t0);

  t0 = Clock::now();
  Image face{size, size, std::vector<uint8_t>(static_cast<size_t>(size) * size * 3)};
  MutableTensorView out{DataType::kUInt8, {1, size, size, 3}, face.bgr.data()};
  const Status ran = (*engine)->RunFrames({faces.view(), audio.view()}, out);
  if (!ran.ok()) return ReportError(ran);
  const double infer_ms = MsSince(t0);

  Status saved = SaveImage(args.out, face);
  if (!saved.ok()) return ReportError(saved);
  std::printf("wrote %s (%dx%d)\n", args.out.c_str(), size, size);
  std::printf(
      "model load %.1f ms, image read %.2f ms, inference %.2f ms (frame form, first run, "
      "%s/%s)\n",
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
