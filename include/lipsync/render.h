// Rendering: speech and an avatar in, a lip-synced video (or numbered frames) out.
//
//   auto avatar = lipsync::LoadAvatar("avatars/anna");
//   auto renderer = lipsync::Renderer::Create(*avatar, engine_options);   // loads both models
//   lipsync::RenderOptions options;
//   options.batch = 4;
//   auto stats = (*renderer)->Render("speech.m4a", lipsync::RenderOutput::Video("out.mp4"),
//   options);
//   // stats->frames, stats->fps, stats->stages (busy and waiting time of every stage)
//
// The render runs one lip-sync stream (audio features, avatar frames and face crops, the UNet's
// batches on the device's scheduler, the new faces pasted back; the one live sessions run on) from
// four threads: audio (decode the speech, push it), frames (decode and crop the avatar frames),
// paste (take the frames in order) and output (H.264 + AAC, or image files). The stats keep five
// stages: audio, frames, infer (the scheduler's runs), paste and output. The model waits only when
// the steps before it are slower than it; memory is bounded by the stream, not by the length of
// the audio. On any error or cancel nothing is left at the output path.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/audio.h"
#include "lipsync/avatar.h"
#include "lipsync/engine.h"
#include "lipsync/frames.h"
#include "lipsync/status.h"
#include "lipsync/video.h"

namespace lipsync {

namespace runtime {
class Scheduler;  // the device's scheduler (src/runtime/scheduler.h)
}  // namespace runtime

struct RenderProgress {
  int64_t frames_done = 0;
  int64_t frames_total = 0;  // an estimate from the container's duration until total_known
  bool total_known = false;
  double elapsed_s = 0.0;
};

// How the faces reach the UNet (see RenderOptions::face_input).
enum class FaceInput {
  kAuto,     // kFrames where the backend converts faces on its GPU, kTensors elsewhere
  kFrames,   // BGR uint8 faces (Engine::RunFrames): the backend masks, scales and converts them
  kTensors,  // float32 [N,6,S,S] tensors built on the CPU by the frames stage (Engine::Run)
};
const char* FaceInputName(FaceInput input);  // "auto", "frames", "tensors"
Result<FaceInput> ParseFaceInput(const std::string& name);

struct RenderOptions {
  int batch = 4;  // frames per UNet run (a fixed-batch model uses its own)
  FrameOrder order = FrameOrder::kPingPong;
  int64_t start_frame = FrameSequence::kDefaultStart;
  MelOptions mel;
  WindowEdge window_edge = WindowEdge::kZeros;
  // Video output: libx264 and AAC settings (size and frame rate come from the avatar).
  int crf = 18;
  std::string preset = "veryfast";
  int encoder_threads = 0;
  int audio_sample_rate = 48000;
  // Frames in flight between two steps (0: batch + 2). More smooths out uneven steps and costs a
  // frame's memory each.
  int queue_frames = 0;
  // Decoded avatar frames (with their face crops) kept for reuse, as the walk over the avatar
  // comes back to them: up to this many MiB, least recently used dropped first. A short avatar
  // then is decoded once; a long one costs a bounded amount of memory.
  int frame_cache_mb = 256;
  // Threads that decode the avatar's frames (and crop their faces) ahead of the frames stage,
  // which otherwise decodes each one itself: a 1920x1080 PNG takes tens of milliseconds, so an
  // avatar longer than the cache would hold render to a few dozen frames a second. -1: one
  // beside a UNet on the CPU, half the cores (2 to 8) beside one on a GPU; 0: none. Each holds up
  // to two decoded frames beyond the cache. A video avatar is decoded by one of them, in order.
  int frame_threads = -1;
  // Video avatars: decoded frames each reader keeps for walking backwards.
  int video_cache_frames = 32;
  // Linux nice value added to the threads of every stage but inference, so that on a busy CPU
  // the model's threads come first and the others use what is left (0: equal shares).
  int background_nice = 0;
  // kAuto hands a GPU backend that converts faces itself (BackendCapabilities::frames_on_device)
  // 0.3 MB of uint8 face per frame instead of a 2.5 MB float tensor, and keeps the CPU backends'
  // tensors, which the frames stage builds off the model's thread. Both give the same frames.
  FaceInput face_input = FaceInput::kAuto;
  // Called from the output thread after each frame.
  std::function<void(const RenderProgress&)> progress;
  // Polled by every stage; when it turns true the render stops with kCancelled.
  const std::atomic<bool>* cancel = nullptr;
};

// Where the frames go: an MP4 (H.264 + the input audio as AAC) or a new folder of image files
// 000000.png, ... (".png" or ".jpg"; no sound).
struct RenderOutput {
  std::string video_path;
  std::string frames_dir;
  std::string frames_ext = "png";
  static RenderOutput Video(std::string path) { return {std::move(path), "", "png"}; }
  static RenderOutput Frames(std::string dir, std::string ext = "png") {
    return {"", std::move(dir), std::move(ext)};
  }
};

// A stage's times. Inference is busy from queueing a batch on the device's scheduler until its
// run is done (the wait for the scheduler's worker and the run), summed over its batches, which
// overlap with several runs at once.
struct StageStats {
  std::string name;
  int64_t items = 0;       // frames (inference: frames, in `batches` runs)
  double busy_s = 0.0;     // working
  double starved_s = 0.0;  // waiting for input
  double blocked_s = 0.0;  // waiting for room downstream
  // CPU time of the stage's thread; for inference that of the scheduler's threads in its
  // batches' runs (not of a backend's own worker threads).
  double cpu_s = 0.0;
};

struct RenderStats {
  int64_t frames = 0;
  int64_t batches = 0;
  int batch = 0;
  int model_runs = 1;                          // UNet runs at once (see RendererOptions)
  FaceInput face_input = FaceInput::kTensors;  // what the UNet was given: kFrames or kTensors
  double seconds = 0.0;                        // wall time of the render, models already loaded
  double fps = 0.0;                            // frames / seconds
  double audio_seconds = 0.0;                  // speech decoded (16 kHz samples / 16000)
  double video_seconds = 0.0;                  // frames / avatar fps
  double cpu_s = 0.0;                          // CPU time of the whole process during the render
  int frame_threads = 0;                       // avatar frame decoders beside the frames stage
  int64_t frames_decoded = 0;        // avatar frames decoded (the rest were kept from before)
  int64_t frames_decoded_ahead = 0;  // of them by the frame threads (RenderOptions)
  std::vector<StageStats> stages;    // audio, frames, infer, paste, output
};

struct RendererOptions {
  // UNet runs at once (batches the scheduler runs together for this render). On a backend that
  // overlaps calls on one engine (BackendCapabilities::overlapping_runs > 1: the CUDA backend, each
  // call on its own stream) the runs share one engine, and one batch uploads while another
  // computes. Elsewhere each run has its own copy of the model with its share of the engine's
  // intra_op_threads (0 there: the physical cores); several runs on the CPU take their activations
  // from the arena as needed (OrtOptions::memory_pattern off), so that two hold about what one
  // planned run does. 0: two on ONNX Runtime's CPU provider with two or more threads (faster than
  // one run on all of them, whose threads wait for one another at every operator) and on a backend
  // that overlaps calls, one elsewhere.
  int model_runs = 0;
  // The device's scheduler that runs the UNet's batches (as offline work of origin "render"),
  // shared with the other callers of the device; null: the renderer makes one of its own.
  std::shared_ptr<runtime::Scheduler> scheduler;
};

class Renderer {
 public:
  // Loads the avatar's UNet (or `model_path` instead, when given) with `options` and its audio
  // encoder (see AudioEncoder::Create), and checks that they fit the avatar (see
  // CheckAvatarModels()). The audio encoder and the conversion of frames to YUV get one CPU
  // thread each beside a UNet on the CPU, four beside one on a GPU. On
  // ONNX Runtime's CPU provider the threads of both models wait idle instead of spinning
  // (OrtOptions::spinning), since the other stages need the cores, unless
  // options.ort.session_config sets "session.intra_op.allow_spinning". InvalidArgument for model
  // runs outside 0..16.
  static Result<std::unique_ptr<Renderer>> Create(const Avatar& avatar,
                                                  const EngineOptions& options = {},
                                                  const std::string& model_path = "",
                                                  const RendererOptions& renderer_options = {});
  ~Renderer();
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;

  // One render. Errors: NotFound / DataLoss / InvalidArgument for audio that is missing, does not
  // decode, is empty or too short for one frame; an unwritable output; a frame that fails to
  // decode or whose rectangle does not fit; Cancelled. Renders may follow one another; a
  // Renderer runs one at a time.
  Result<RenderStats> Render(const std::string& audio_path, const RenderOutput& output,
                             const RenderOptions& options);

  const Avatar& avatar() const;
  Engine& unet();  // the first copy, when there are several (model_runs())
  AudioEncoder& audio_encoder();
  int model_runs() const;

 private:
  struct Models;
  explicit Renderer(std::unique_ptr<Models> models);
  std::unique_ptr<Models> models_;
};

}  // namespace lipsync
