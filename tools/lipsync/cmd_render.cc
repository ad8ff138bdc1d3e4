// `lipsync render`: speech + an avatar -> a lip-synced MP4 (or image files). The work is the
// library's Renderer; this file parses flags, draws the progress bar and prints the summary.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench_stats.h"
#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "lipsync/memory.h"
#include "lipsync/render.h"

namespace lipsync::cli {
namespace {

struct RenderArgs {
  EngineFlags engine;
  std::string avatar;
  std::string audio;
  std::string out;
  std::string frames_out;
  std::string frames_format = "png";
  std::string order = "pingpong";
  int64_t start_frame = -1;
  int batch = 4;
  int model_runs = 0;
  std::string face_input = "auto";
  int crf = 18;
  std::string preset = "veryfast";
  int queue = 0;
  int background_nice = 0;
  int frame_threads = -1;
  int frame_cache_mb = 256;
  bool json = false;
  bool quiet = false;
};

std::string Clock(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof(text), "%ld:%02ld", s / 60, s % 60);
  return text;
}

// A one-line bar on stderr, redrawn at most 5 times a second and once at the end.
class ProgressBar {
 public:
  void Update(const RenderProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.total_known && p.frames_done == p.frames_total;
    if (!last && now - drawn_ < std::chrono::milliseconds(200)) return;
    drawn_ = now;
    const double fps = p.elapsed_s > 0 ? p.frames_done / p.elapsed_s : 0.0;
    const int64_t total = std::max<int64_t>(p.frames_total, 1);
    const int width = 30;
    const int filled = static_cast<int>(width * std::min<int64_t>(p.frames_done, total) / total);
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    const double eta = fps > 0 ? (total - p.frames_done) / fps : 0.0;
    std::fprintf(stderr, "\r[%s] %lld/%s%lld frames  %.1f frames/s  ETA %s ", bar.c_str(),
                 static_cast<long long>(p.frames_done), p.total_known ? "" : "~",
                 static_cast<long long>(total), fps, Clock(eta).c_str());
    if (last) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  std::chrono::steady_clock::time_point drawn_{};
};

nlohmann::json StatsJson(const RenderArgs& args, const RenderStats& s, double load_s) {
  nlohmann::json stages = nlohmann::json::array();
  for (const StageStats& st : s.stages) {
    stages.push_back({{"name", st.name},
                      {"items", st.items},
                      {"busy_s", st.busy_s},
                      {"starved_s", st.starved_s},
                      {"blocked_s", st.blocked_s},
                      {"cpu_s", st.cpu_s},
                      {"cpu_ms_per_frame", s.frames ? 1000.0 * st.cpu_s / s.frames : 0.0},
                      {"busy_ms_per_frame", s.frames ? 1000.0 * st.busy_s / s.frames : 0.0}});
  }
  return {{"output", args.out.empty() ? args.frames_out : args.out},
          {"frames", s.frames},
          {"batch", s.batch},
          {"batches", s.batches},
          {"model_runs", s.model_runs},
          {"face_input", FaceInputName(s.face_input)},
          {"seconds", s.seconds},
          {"fps", s.fps},
          {"audio_seconds", s.audio_seconds},
          {"video_seconds", s.video_seconds},
          {"cpu_s", s.cpu_s},
          {"frame_cache_mb", args.frame_cache_mb},
          {"frame_threads", s.frame_threads},
          {"avatar_frames_decoded", s.frames_decoded},
          {"avatar_frames_decoded_ahead", s.frames_decoded_ahead},
          {"model_load_s", load_s},
          {"peak_rss_mb", PeakRssMiB()},
          {"stages", stages}};
}

int RunRender(const RenderArgs& args) {
  if (args.out.empty() == args.frames_out.empty()) {
    return ReportError(InvalidArgument("give --out (a video) or --frames-out (a folder)"));
  }
  auto order = ParseFrameOrder(args.order);
  if (!order.ok()) return ReportError(order.status().WithContext("--order"));
  auto face_input = ParseFaceInput(args.face_input);
  if (!face_input.ok()) return ReportError(face_input.status().WithContext("--face-input"));
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  auto avatar = LoadAvatar(args.avatar);
  if (!avatar.ok()) return ReportError(avatar.status());
  const auto t0 = std::chrono::steady_clock::now();
  RendererOptions renderer_options;
  renderer_options.model_runs = args.model_runs;
  auto renderer = Renderer::Create(*avatar, *options, args.engine.model, renderer_options);
  if (!renderer.ok()) return ReportError(renderer.status());
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  AudioEncoder& encoder = (*renderer)->audio_encoder();
  if (!encoder.fallback_reason().empty() && !args.quiet) {
    std::fprintf(stderr, "audio encoder: %s\n", encoder.fallback_reason().c_str());
  }

  RenderOptions ro;
  ro.batch = args.batch;
  ro.order = *order;
  ro.face_input = *face_input;
  ro.start_frame = args.start_frame;
  ro.crf = args.crf;
  ro.preset = args.preset;
  ro.queue_frames = args.queue;
  ro.background_nice = args.background_nice;
  ro.frame_threads = args.frame_threads;
  ro.frame_cache_mb = args.frame_cache_mb;
  std::atomic<bool> interrupted{false};
  ro.cancel = &interrupted;
  ProgressBar bar;
  if (!args.quiet && platform::StderrIsTerminal()) {
    ro.progress = [&bar](const RenderProgress& p) { bar.Update(p); };
  }
  const RenderOutput output = args.out.empty()
                                  ? RenderOutput::Frames(args.frames_out, args.frames_format)
                                  : RenderOutput::Video(args.out);
  // Ctrl-C, or a stop from a service manager or `timeout` (SIGTERM), stops the render cleanly:
  // the partial output is removed.
  auto hook =
      platform::ShutdownHook::Install([&interrupted](std::string_view) { interrupted = true; });
  if (!hook.ok()) return ReportError(hook.status());
  // The working memory the render took from the system, against the most it held at once: a pool
  // that reuses its blocks takes little more than that peak.
  HostMemory().ResetPeak();
  const int64_t fresh_before = HostMemory().stats().fresh_total;
  auto stats = (*renderer)->Render(args.audio, output, ro);
  const HostMemoryStats memory = HostMemory().stats();
  hook->reset();
  if (ro.progress && !stats.ok()) std::fprintf(stderr, "\n");  // the bar stopped mid-line
  if (!stats.ok()) return ReportError(stats.status());

  if (args.json) {
    nlohmann::json json = StatsJson(args, *stats, load_s);
    auto backend_of = [](const Engine& engine) {
      return engine.info().backend + "/" + engine.info().provider;
    };
    json["unet_backend"] = backend_of((*renderer)->unet());
    json["audio_encoder_backend"] = backend_of(encoder.engine());
    json["host_working_memory"] = {{"fresh_bytes", memory.fresh_total - fresh_before},
                                   {"peak_bytes", memory.peak_working}};
    std::printf("%s\n", json.dump(2).c_str());
    return 0;
  }
  std::printf(
      "wrote %s: %lld frames (%.2f s of video for %.2f s of audio) in %.2f s, "
      "%.1f frames/s, batch %d%s\n",
      (args.out.empty() ? args.frames_out : args.out).c_str(),
      static_cast<long long>(stats->frames), stats->video_seconds, stats->audio_seconds,
      stats->seconds, stats->fps, stats->batch,
      stats->model_runs > 1
          ? (", " + std::to_string(stats->model_runs) + " model runs at once").c_str()
          : "");
  std::printf("avatar frames decoded: %lld (%lld ahead of the frames stage on %d thread%s)\n",
              static_cast<long long>(stats->frames_decoded),
              static_cast<long long>(stats->frames_decoded_ahead), stats->frame_threads,
              stats->frame_threads == 1 ? "" : "s");
  std::printf("%-8s %10s %14s %13s %10s %10s\n", "stage", "busy s", "busy ms/frame", "cpu ms/frame",
              "starved s", "blocked s");
  const double per_frame = stats->frames ? 1000.0 / stats->frames : 0.0;
  for (const StageStats& s : stats->stages) {
    std::printf("%-8s %10.2f %14.2f %13.2f %10.2f %10.2f\n", s.name.c_str(), s.busy_s,
                s.busy_s * per_frame, s.cpu_s * per_frame, s.starved_s, s.blocked_s);
  }
  return 0;
}

}  // namespace

void AddRenderCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("render", "Speech + an avatar -> a lip-synced video");
  auto args = std::make_shared<RenderArgs>();
  AddEngineFlags(cmd, &args->engine, /*with_max_batch=*/true, /*model_required=*/false);
  cmd->add_option("--avatar", args->avatar, "avatar folder (docs/AVATARS.md)")->required();
  cmd->add_option("--audio", args->audio, "speech: any audio or video file FFmpeg reads")
      ->required();
  cmd->add_option("--out,-o", args->out, "output video (.mp4: H.264 + AAC)");
  cmd->add_option("--frames-out", args->frames_out,
                  "write numbered images to this new folder instead of a video");
  cmd->add_option("--frames-format", args->frames_format, "png | jpg (with --frames-out)")
      ->capture_default_str();
  cmd->add_option("--batch", args->batch, "frames per model run")->capture_default_str();
  cmd->add_option("--model-runs", args->model_runs,
                  "model runs at once; on the CPU each with its share of --threads (0: two on the "
                  "CPU with 2+ threads and on --backend cuda, else one)")
      ->capture_default_str();
  cmd->add_option("--face-input", args->face_input,
                  "auto | frames | tensors: faces go to the model as uint8 frames (converted on "
                  "the GPU by --backend cuda) or as float tensors built on the CPU; auto: frames "
                  "where the GPU converts them")
      ->capture_default_str();
  cmd->add_option("--start-frame", args->start_frame,
                  "avatar frame of the first output frame (default: 1 for pingpong, 0 for loop)");
  cmd->add_option("--order", args->order, "pingpong | loop: how output frames walk the avatar")
      ->capture_default_str();
  cmd->add_option("--crf", args->crf, "H.264 quality (0 lossless, 18 visually lossless)")
      ->capture_default_str();
  cmd->add_option("--preset", args->preset, "libx264 speed preset")->capture_default_str();
  cmd->add_option("--queue", args->queue, "frames in flight between stages (0: batch + 2)")
      ->capture_default_str();
  cmd->add_option("--frame-threads", args->frame_threads,
                  "threads that decode the avatar's frames ahead (-1: one beside a UNet on the "
                  "CPU, half the cores, 2 to 8, beside one on a GPU; 0: none)")
      ->capture_default_str();
  cmd->add_option("--frame-cache-mb", args->frame_cache_mb,
                  "decoded avatar frames kept for reuse, in MiB")
      ->capture_default_str();
  cmd->add_option("--background-nice", args->background_nice,
                  "lower the priority of all stages but inference by this nice value")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print the summary (per-stage times) as JSON");
  cmd->add_flag("--quiet,-q", args->quiet, "no progress bar");
  cmd->callback([=] { *exit_code = RunRender(*args); });
}

}  // namespace lipsync::cli
