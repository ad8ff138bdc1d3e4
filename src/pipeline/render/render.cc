// Renderer: loads the models once; Render() sets up the output and the lip-sync stream, runs its
// steps and the output on their own threads and finishes (or discards) the output.
#include "lipsync/render.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "core/platform.h"
#include "pipeline/render/render_pipeline.h"
#include "runtime/catch_all.h"

namespace lipsync {

namespace internal {

Pipeline::Pipeline(const RenderOptions& o, size_t queue) : options(o), pasted(queue) {
  const char* names[kStageCount] = {"audio", "frames", "infer", "paste", "output"};
  for (int i = 0; i < kStageCount; ++i) stats[i].name = names[i];
}

void Pipeline::Fail(const Status& status) {
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (failed_.load()) return;
    error_ = status;
    failed_ = true;
  }
  if (stream) stream->Stop(status);
  pasted.Stop();
}

Status Pipeline::error() const {
  std::lock_guard<std::mutex> lock(error_mutex_);
  return error_;
}

bool Pipeline::CheckCancel() {
  if (failed()) return true;
  if (options.cancel && options.cancel->load()) {
    Fail(Status(StatusCode::kCancelled, "render cancelled"));
    return true;
  }
  return false;
}

}  // namespace internal

const char* FaceInputName(FaceInput input) {
  switch (input) {
    case FaceInput::kFrames:
      return "frames";
    case FaceInput::kTensors:
      return "tensors";
    case FaceInput::kAuto:
      break;
  }
  return "auto";
}

Result<FaceInput> ParseFaceInput(const std::string& name) {
  for (FaceInput input : {FaceInput::kAuto, FaceInput::kFrames, FaceInput::kTensors}) {
    if (name == FaceInputName(input)) return input;
  }
  return InvalidArgument("face input must be auto, frames or tensors, got '" + name + "'");
}

namespace {

// ONNX Runtime's CPU threads spin while they wait for work, which suits a process that only runs
// the model. Here four other stages share the cores, and the spinning takes their time (and, on
// hyper-threaded cores, the working thread's): they wait idle, unless the caller's session config
// says otherwise (OrtOptions::spinning).
EngineOptions RenderEngineOptions(EngineOptions options) {
  options.ort.spinning = false;
  return options;
}

// How many UNet runs go at once, and the engine options of each. On ONNX Runtime's CPU provider
// one run on N threads stops at every operator until all N are done, so a thread that another
// stage takes the core from holds up the rest; runs on one thread each do not wait on one
// another. Two runs of half the threads each were faster than one on two cores (measured,
// docs/PERFORMANCE.md). Elsewhere one run, unless the caller asks for more; a backend whose
// engine overlaps calls is seen only once it is loaded, and Create() then shares that engine.
struct UnetRuns {
  int runs = 1;
  EngineOptions options;
};

Result<UnetRuns> PlanUnetRuns(const EngineOptions& options, int requested) {
  constexpr int kMostRuns = 16;
  if (requested < 0 || requested > kMostRuns) {
    return InvalidArgument("model runs at once " + std::to_string(requested) + " is outside 0.." +
                           std::to_string(kMostRuns) + " (0: automatic)");
  }
  UnetRuns plan;
  const bool ort_cpu = options.backend == "ort" && options.provider == "cpu";
  const int threads = options.intra_op_threads > 0 ? options.intra_op_threads
                      : ort_cpu                    ? platform::PhysicalCoreCount()
                                                   : 0;
  plan.runs = requested > 0 ? requested : (ort_cpu && threads >= 2 ? 2 : 1);
  EngineOptions all_runs = RenderEngineOptions(options);
  if (plan.runs > 1) all_runs.intra_op_threads = threads;  // one run keeps the backend's default
  // Without the memory pattern, two runs hold about what one planned run does (1.4 GB of
  // activations at batch 4 for the demo UNet), and were faster too (docs/PERFORMANCE.md).
  plan.options = OptionsPerRun(all_runs, plan.runs);
  return plan;
}

// Threads for the CPU work that one stage does on each frame (the audio encoder, the conversion
// to YUV). Beside a UNet on the CPU, one: the UNet needs the cores. Beside one on a GPU, frames go
// by at hundreds a second, and one core would limit the render (the encoder takes about 2 ms a
// frame, the conversion of a 1280x720 frame about 3 ms): a few.
int HelperThreads(const Engine& unet) {
  constexpr int kBesideGpu = 4;
  return unet.info().provider == "cpu" ? 1 : kBesideGpu;
}

// RenderOptions::frame_threads when automatic: beside a GPU, frames that miss the cache must be
// decoded at the rate the GPU makes faces, a few milliseconds of CPU each for a 480x352 PNG and
// tens for a 1920x1080 one.
int FrameThreads(const Engine& unet, int asked) {
  if (asked >= 0) return asked;
  if (unet.info().provider == "cpu") return 1;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(cores / 2, 2, 8);
}

}  // namespace

struct Renderer::Models {
  Avatar avatar;
  std::string unet_name;                       // the UNet's file name, in the scheduler's errors
  std::vector<std::unique_ptr<Engine>> unets;  // the loaded copies of the UNet
  std::vector<Engine*> runs;                   // one per concurrent run: its copy, or a shared one
  std::unique_ptr<AudioEncoder> encoder;
  UnetInputs roles;
  FaceLayout layout;
  // The device's scheduler, which runs the UNet's batches (last: it stops before the engines go).
  std::shared_ptr<runtime::Scheduler> scheduler;
};

Renderer::Renderer(std::unique_ptr<Models> models) : models_(std::move(models)) {}
Renderer::~Renderer() = default;
const Avatar& Renderer::avatar() const { return models_->avatar; }
Engine& Renderer::unet() { return *models_->unets[0]; }
int Renderer::model_runs() const { return static_cast<int>(models_->runs.size()); }
AudioEncoder& Renderer::audio_encoder() { return *models_->encoder; }

Result<std::unique_ptr<Renderer>> Renderer::Create(const Avatar& avatar,
                                                   const EngineOptions& options,
                                                   const std::string& model_path,
                                                   const RendererOptions& renderer_options) {
  auto m = std::make_unique<Models>();
  m->avatar = avatar;
  const std::string where = "avatar '" + avatar.dir() + "'";
  LIPSYNC_ASSIGN_OR_RETURN(UnetRuns plan, PlanUnetRuns(options, renderer_options.model_runs));
  const std::string unet_path = model_path.empty() ? avatar.model_path() : model_path;
  LIPSYNC_ASSIGN_OR_RETURN(auto first, Engine::Create(unet_path, plan.options));
  const int overlapping = first->capabilities().overlapping_runs;
  m->unets.push_back(std::move(first));
  if (overlapping > 1) {
    // Calls on this engine run at once on their own streams: every run shares it.
    const int runs = renderer_options.model_runs > 0 ? renderer_options.model_runs : 2;
    m->runs.assign(static_cast<size_t>(runs), m->unets[0].get());
  } else {
    for (int i = 1; i < plan.runs; ++i) {
      LIPSYNC_ASSIGN_OR_RETURN(auto unet, Engine::Create(unet_path, plan.options));
      m->unets.push_back(std::move(unet));
    }
    for (auto& unet : m->unets) m->runs.push_back(unet.get());
  }
  m->unet_name = unet_path.substr(unet_path.find_last_of("/\\") + 1);
  if (renderer_options.scheduler) {
    m->scheduler = renderer_options.scheduler;
  } else {
    runtime::SchedulerOptions device;
    const int gpu = m->unets[0]->capabilities().device_id;
    device.device = gpu >= 0 ? "cuda:" + std::to_string(gpu) : "cpu";
    m->scheduler = std::make_shared<runtime::Scheduler>(device);
  }
  auto roles = FindUnetInputs(m->unets[0]->info());
  if (!roles.ok()) return roles.status().WithContext(where);
  m->roles = *roles;
  if (m->roles.size != avatar.manifest().model_size) {
    return InvalidArgument(where + ": avatar.json says model_size " +
                           std::to_string(avatar.manifest().model_size) + ", the model takes " +
                           std::to_string(m->roles.size) + "x" + std::to_string(m->roles.size) +
                           " faces");
  }
  LIPSYNC_ASSIGN_OR_RETURN(m->layout, FaceLayout::ForInputSize(m->roles.size));
  // The encoder is small and runs beside the UNet: one thread keeps it off the cores of a UNet on
  // the CPU (see HelperThreads); its threads, like the UNet's, wait idle between runs.
  EngineOptions encoder_options = RenderEngineOptions(options);
  encoder_options.intra_op_threads = HelperThreads(*m->unets[0]);
  LIPSYNC_ASSIGN_OR_RETURN(m->encoder,
                           AudioEncoder::Create(avatar.audio_encoder_path(), encoder_options));
  Status encoder_ok = CheckAudioEncoderInfo(m->encoder->engine().info());
  if (!encoder_ok.ok()) return encoder_ok.WithContext(where);
  return std::unique_ptr<Renderer>(new Renderer(std::move(m)));
}

Result<RenderStats> Renderer::Render(const std::string& audio_path, const RenderOutput& output,
                                     const RenderOptions& options) {
  const Avatar& avatar = models_->avatar;
  const ModelInfo& info = models_->unets[0]->info();
  if (options.batch < 1) {
    return InvalidArgument("batch " + std::to_string(options.batch) + " must be at least 1");
  }
  if (options.frame_threads < -1 || options.frame_threads > 64) {
    return InvalidArgument(std::to_string(options.frame_threads) +
                           " frame threads: give -1 (automatic), 0 (none) or up to 64");
  }
  if (options.queue_frames < 0) {
    return InvalidArgument("queue of " + std::to_string(options.queue_frames) +
                           " frames: give 0 (automatic) or more");
  }
  if (options.background_nice < 0 || options.background_nice > 19) {
    return InvalidArgument("background nice value " + std::to_string(options.background_nice) +
                           " is outside 0..19");
  }
  if (output.video_path.empty() == output.frames_dir.empty()) {
    return InvalidArgument("give either a video path or a frames folder as the output");
  }
  const size_t queue_frames =
      options.queue_frames > 0 ? options.queue_frames : static_cast<size_t>(options.batch) + 2;
  // Every avatar UNet has the frame form (FindUnetInputs asks for its interface).
  const int runs = static_cast<int>(models_->runs.size());
  internal::Pipeline p(options, queue_frames);
  const bool frame_form = options.face_input == FaceInput::kFrames ||
                          (options.face_input == FaceInput::kAuto &&
                           models_->unets[0]->capabilities().frames_on_device);
  p.audio_path = audio_path;
  int batch = options.batch;
  if (!info.dynamic_batch) {  // the model's own batch, short batches padded by the scheduler
    batch = static_cast<int>(info.inputs[models_->roles.visual].shape[0]);
  } else if (options.batch > info.max_batch) {
    return InvalidArgument("batch " + std::to_string(options.batch) +
                           " is above the engine's largest batch " +
                           std::to_string(info.max_batch));
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto sequence, FrameSequence::Create(avatar.frame_count(), options.order,
                                                                options.start_frame));
  stream::CachedFramesOptions frame_options;
  frame_options.reader.video_cache_frames = options.video_cache_frames;
  frame_options.cache_bytes = static_cast<size_t>(std::max(0, options.frame_cache_mb)) << 20;
  frame_options.decode_threads = FrameThreads(*models_->unets[0], options.frame_threads);
  frame_options.nice = options.background_nice;
  LIPSYNC_ASSIGN_OR_RETURN(auto frames,
                           stream::CachedFrames::Open(avatar, models_->layout, frame_options));

  // Inputs first, then the output, so that a bad input never creates anything.
  LIPSYNC_ASSIGN_OR_RETURN(p.feature_audio, AudioReader::Open(audio_path, kAudioSampleRate));
  const double fps = avatar.manifest().fps;
  const double duration = p.feature_audio->duration_seconds();
  p.estimated_total =
      duration > 0
          ? VideoFrameCount(1 + static_cast<int64_t>(duration * kAudioSampleRate) / kMelHop, fps)
          : 0;
  if (!output.video_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(p.mux_audio, AudioReader::Open(audio_path, options.audio_sample_rate));
    VideoWriterOptions vo;
    vo.width = avatar.width();
    vo.height = avatar.height();
    vo.fps = fps;
    vo.crf = options.crf;
    vo.preset = options.preset;
    vo.encoder_threads = options.encoder_threads;
    vo.conversion_threads = HelperThreads(*models_->unets[0]);
    vo.audio_sample_rate = options.audio_sample_rate;
    LIPSYNC_ASSIGN_OR_RETURN(p.writer, VideoWriter::Create(output.video_path, vo));
  } else {
    std::string ext = output.frames_ext;
    if (!ext.empty() && ext[0] == '.') ext.erase(0, 1);
    if (ext != "png" && ext != "jpg" && ext != "jpeg") {
      return InvalidArgument("frames must be png or jpg, got '" + output.frames_ext + "'");
    }
    p.frames_ext = ext;
    LIPSYNC_ASSIGN_OR_RETURN(auto staging, internal::StagingFolder::Create(output.frames_dir));
    p.frames_dir.emplace(std::move(staging));
  }

  // The UNet on the device's scheduler for this render: up to `runs` batches at once, each on a
  // copy of its own (or on the one engine whose calls overlap).
  runtime::ModelConfig unet;
  unet.name = models_->unet_name;
  unet.max_batch = batch;
  unet.layout = models_->layout;
  unet.visual_input = static_cast<int>(models_->roles.visual);
  unet.audio_input = static_cast<int>(models_->roles.audio);
  unet.max_runs = runs;
  std::shared_ptr<runtime::ScheduledModel> model;
  if (models_->unets.size() > 1) {
    std::vector<Engine*> copies;
    for (auto& copy : models_->unets) copies.push_back(copy.get());
    model = models_->scheduler->AddModel(std::move(copies), unet);
  } else {
    model = models_->scheduler->AddModel(models_->unets[0].get(), unet);
  }
  stream::StreamOptions so;
  so.fps = fps;
  so.mel = options.mel;
  so.window_edge = options.window_edge;
  so.batch = batch;
  so.origin = runtime::Origin::kRender;
  so.frame_form = frame_form;
  // Enough for the frames queued before the model, the batches it runs and the one being filled;
  // the audio runs ahead of the frames by a few seconds at most (a window is 32 KiB).
  so.max_batches = static_cast<int>(queue_frames / static_cast<size_t>(batch)) + 2 + runs;
  so.max_waiting_windows = std::max<size_t>(4 * queue_frames, 128);
  p.stream = std::make_unique<stream::LipSyncStream>(*models_->scheduler, model, *models_->encoder,
                                                     *frames, sequence, models_->layout, so);

  p.started = internal::Clock::now();
  const double cpu_before = platform::ProcessCpuSeconds();
  {
    // Every stage but inference may run at a lower priority (a per-thread nice on Linux).
    // Each thread is named after its stage ("render-paste"), as top -H and profilers show it.
    const int nice = options.background_nice;
    auto start = [nice, &p](const char* name, void (*stage)(internal::Pipeline&), bool background) {
      return std::thread([=, &p] {
        platform::NameThisThread(name);
        if (background) platform::LowerThisThreadPriority(nice);
        // What a stage throws (a failed allocation) ends the render with an error, not the process.
        const Status thrown = runtime::CatchAll(name, [&] {
          stage(p);
          return Status::Ok();
        });
        if (!thrown.ok()) p.Fail(thrown);
      });
    };
    std::vector<std::thread> threads;
    threads.push_back(start("render-audio", internal::RunAudioStage, true));
    threads.push_back(start("render-frames", internal::RunFramesStage, true));
    threads.push_back(start("render-paste", internal::RunPasteStage, true));
    threads.push_back(start("render-output", internal::RunOutputStage, true));
    for (auto& t : threads) t.join();
  }
  const stream::StreamStats steps = p.stream->stats();
  const StageStats* step[internal::kStageCount] = {&steps.audio, &steps.frames, &steps.infer,
                                                   &steps.paste, nullptr};
  for (int i = 0; i < internal::kStageCount; ++i) {
    if (!step[i]) continue;
    StageStats& stage = p.stats[i];
    stage.items += step[i]->items;
    stage.busy_s += step[i]->busy_s;
    stage.starved_s += step[i]->starved_s;
    stage.blocked_s += step[i]->blocked_s;
  }
  p.stats[internal::kInferStage].cpu_s += steps.infer_cpu_s;
  if (p.failed()) return p.error();  // the writer or staging folder removes what was written
  if (p.frames_written != p.stream->frames_total()) {
    return Internal("render ended after " + std::to_string(p.frames_written) + " of " +
                    std::to_string(p.stream->frames_total()) + " frames");
  }
  if (p.writer) {
    LIPSYNC_RETURN_IF_ERROR(p.writer->Finish());
  } else {
    LIPSYNC_RETURN_IF_ERROR(p.frames_dir->Commit());
  }

  RenderStats stats;
  stats.frames = p.frames_written;
  stats.batches = steps.batches;
  stats.model_runs = runs;
  stats.face_input = frame_form ? FaceInput::kFrames : FaceInput::kTensors;
  stats.batch = batch;
  stats.seconds = internal::SecondsSince(p.started);
  stats.fps = stats.seconds > 0 ? stats.frames / stats.seconds : 0.0;
  stats.audio_seconds = static_cast<double>(p.stream->audio_samples()) / kAudioSampleRate;
  stats.video_seconds = stats.frames / fps;
  stats.cpu_s = platform::ProcessCpuSeconds() - cpu_before;
  stats.stages.assign(std::begin(p.stats), std::end(p.stats));
  const stream::CachedFrames::Counts decoded = frames->counts();
  stats.frame_threads = frame_options.decode_threads;
  stats.frames_decoded = decoded.decoded;
  stats.frames_decoded_ahead = decoded.decoded_ahead;
  return stats;
}

}  // namespace lipsync
