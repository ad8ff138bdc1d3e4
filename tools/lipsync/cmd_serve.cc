// `lipsync serve`: the gRPC server. Stops cleanly on a stop request (SIGINT/SIGTERM; Ctrl+C or
// closing the console on Windows): refuses new calls, finishes the accepted ones within the drain
// timeout, exits 0. With a drain delay it first keeps serving with /readyz at 503 for up to that
// long (a second request ends the wait), so that a balancer polling /readyz takes it out before it
// refuses calls.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "lipsync/memory.h"
#include "pipeline/stream/frame_store.h"
#include "python_exporter.h"
#include "server/server.h"

namespace lipsync::cli {
namespace {

struct ServeArgs {
  EngineFlags engine;
  server::ServerOptions server;
  int64_t max_queue_delay_us = 2000;
  std::string preferred_batch = "auto";
  size_t max_queue = 256;
  int drain_timeout_s = 10;
  int drain_delay_s = 0;
  int max_message_mb = 64;
  std::string log_level = "info";
  int session_idle_timeout_s = 30;
  // The avatar repository (--avatars DIR|config.yaml).
  std::string preload;
  int64_t avatar_host_mb = 0, avatar_gpu_mb = 0;
  std::string avatar_frames = "decoded";
  // Where the compatibility services may follow the old servers instead (docs/API.md).
  std::string monolithic_align = "lipsync", monolithic_paste = "lipsync";
  std::string lipsyncsrv_window = "lipsync";
  int64_t lipsyncsrv_max_package_mb = 8192;
};

// "auto" (the server times the engine at start-up and takes its most efficient batch size up to
// max_batch) or a number from 1 to max_batch. An invalid --max-batch is Server::Start's to report.
Result<int> ParsePreferredBatch(const std::string& flag, int max_batch) {
  if (flag == "auto") return server::BatcherOptions::kAutoPreferredBatch;
  int n = 0;
  try {
    size_t used = 0;
    n = std::stoi(flag, &used);
    if (used != flag.size()) n = 0;
  } catch (const std::exception&) {
    n = 0;
  }
  if (n < 1 || (max_batch >= 1 && n > max_batch)) {
    return InvalidArgument("--preferred-batch must be auto or a number from 1 to --max-batch (" +
                           std::to_string(max_batch) + "), got '" + flag + "'");
  }
  return n;
}

int RunServe(ServeArgs& args) {
  // Big frame buffers stay in the heap under load; the trimmer below returns memory once idle.
  platform::TuneHeapForLargeBuffers();
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(args.log_level));
  // Caught from here on: a request while the server starts is answered once it serves.
  auto stop_requests = platform::ShutdownRequests::Catch();
  if (!stop_requests.ok()) return ReportError(stop_requests.status());

  // --avatars alone serves live sessions; --monolithic and --lipsyncsrv add other contracts.
  const bool has_avatars = !args.server.monolithic_options.avatars.root.empty();
  if (((args.server.monolithic || args.server.lipsyncsrv) && !has_avatars) ||
      (!args.server.monolithic_listen.empty() && !args.server.monolithic)) {
    return ReportError(InvalidArgument(
        "--monolithic and --lipsyncsrv need --avatars DIR|config.yaml (and --monolithic-listen "
        "needs --monolithic)"));
  }
  if ((!args.server.lipsyncsrv_listen.empty() ||
       !args.server.lipsyncsrv_options.audio_encoder.empty()) &&
      !args.server.lipsyncsrv) {
    return ReportError(
        InvalidArgument("--lipsyncsrv-listen and --lipsyncsrv-encoder need --lipsyncsrv"));
  }
  if (!has_avatars && !args.preload.empty()) {
    return ReportError(InvalidArgument("--preload needs --avatars DIR|config.yaml"));
  }
  {
    auto align = server::ParseBehaviour(args.monolithic_align, "go", "--monolithic-align");
    if (!align.ok()) return ReportError(align.status());
    auto paste = server::ParseBehaviour(args.monolithic_paste, "go", "--monolithic-paste");
    if (!paste.ok()) return ReportError(paste.status());
    auto window = server::ParseBehaviour(args.lipsyncsrv_window, "python", "--lipsyncsrv-window");
    if (!window.ok()) return ReportError(window.status());
    if (args.lipsyncsrv_max_package_mb < 1) {
      return ReportError(InvalidArgument("--lipsyncsrv-max-package-mb must be at least 1"));
    }
    args.server.monolithic_options.behaviour = {*align, *paste};
    args.server.lipsyncsrv_options.window = *window;
    args.server.lipsyncsrv_options.package_limits.max_bytes = args.lipsyncsrv_max_package_mb << 20;
  }
  // Imported packages' checkpoints are exported by lipsync's Python exporter, then verified by
  // this binary.
  args.server.lipsyncsrv_options.export_checkpoint =
      PythonCheckpointExporter(VerifiedByThisProgram());
  {
    auto& avatars = args.server.monolithic_options.avatars;
    for (size_t at = 0; at < args.preload.size();) {
      const size_t comma = std::min(args.preload.find(',', at), args.preload.size());
      if (comma > at) avatars.preload.push_back(args.preload.substr(at, comma - at));
      at = comma + 1;
    }
    auto storage = stream::ParseFrameStorage(args.avatar_frames);
    if (!storage.ok()) return ReportError(storage.status());
    avatars.frames = *storage;
    avatars.max_host_bytes = args.avatar_host_mb << 20;
    avatars.max_gpu_bytes = args.avatar_gpu_mb << 20;
  }
  args.server.sessions.idle_timeout = std::chrono::seconds(args.session_idle_timeout_s);
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  options->max_batch = args.server.batching.max_batch;
  // The requests' and sessions' threads share the cores with the models: spinning engine threads
  // took three times the CPU of live sessions (docs/PERFORMANCE.md). --ort-config can ask for it.
  options->ort.spinning = false;
  // Without --model only the avatar services run.
  if (args.engine.model.empty() && !has_avatars) {
    return ReportError(InvalidArgument("give --model, --avatars DIR or both"));
  }
  std::unique_ptr<Engine> engine;
  if (!args.engine.model.empty()) {
    auto created = Engine::Create(args.engine.model, *options);
    if (!created.ok()) return ReportError(created.status());
    engine = std::move(*created);
    const ModelInfo& info = engine->info();
    spdlog::info("loaded {} ({} inputs, opset {}) on backend {} provider {}", info.path,
                 info.inputs.size(), info.opset, info.backend, info.provider);
    if (!info.fallback_reason.empty()) spdlog::warn("{}: {}", info.path, info.fallback_reason);
  }

  auto preferred = ParsePreferredBatch(args.preferred_batch, args.server.batching.max_batch);
  if (!preferred.ok()) return ReportError(preferred.status());
  args.server.batching.preferred_batch = *preferred;

  args.server.batching.max_queue_delay = std::chrono::microseconds(args.max_queue_delay_us);
  args.server.batching.max_queue = args.max_queue;
  args.server.drain_timeout = std::chrono::seconds(args.drain_timeout_s);
  args.server.max_message_bytes = args.max_message_mb << 20;
  args.server.monolithic_options.avatars.engine = *options;
  args.server.monolithic_options.avatars.engine.max_batch = server::kCompositeMaxBatch;
  auto server = server::Server::Start(engine.get(), args.server);
  if (!server.ok()) return ReportError(server.status());
  if (engine) {
    spdlog::info(
        "serving model '{}' on {} (port {}){}; batches of up to {} (max {}), queue delay {} us, "
        "queue {}",
        args.server.model_name, args.server.listen, (*server)->port(),
        args.server.tls_cert_file.empty() ? "" : " with TLS", (*server)->preferred_batch(),
        args.server.batching.max_batch, args.max_queue_delay_us, args.max_queue);
  } else {
    spdlog::info("serving avatars only on {} (port {}){}", args.server.listen, (*server)->port(),
                 args.server.tls_cert_file.empty() ? "" : " with TLS");
  }
  if (args.server.monolithic) {
    spdlog::info("monolithic service on port {}", (*server)->monolithic_port());
  }
  if (auto* avatars = (*server)->avatars()) {
    spdlog::info(
        "avatars from {}: {} available, {} loaded, at most {} loaded, host budget {} MiB, GPU "
        "budget {} MiB (0: none), frames kept {}{}",
        args.server.monolithic_options.avatars.root, avatars->Available().size(),
        avatars->Usage().loaded, avatars->max_models(), avatars->max_host_bytes() >> 20,
        avatars->max_gpu_bytes() >> 20, stream::FrameStorageName(avatars->frame_storage()),
        args.engine.model.empty() ? "" : "; KServe model repository extension on");
  }
  if (args.server.lipsyncsrv) {
    spdlog::info("lipsyncsrv service on port {} over avatars in {}", (*server)->lipsyncsrv_port(),
                 args.server.monolithic_options.avatars.root);
  }
  if (has_avatars) {
    spdlog::info("live sessions (lipsync.v1.Sessions) over avatars in {}, batches of up to {}",
                 args.server.monolithic_options.avatars.root, args.server.sessions.max_batch);
  }
  if (!args.server.metrics_listen.empty()) {
    spdlog::info("metrics on http://{}/metrics (port {}), probes /healthz /readyz",
                 args.server.metrics_listen, (*server)->metrics_port());
  }

  // Hand freed frame buffers and the working-memory pool's cached blocks back to the system when
  // the server goes idle (a second in which no frame finished and no run holds working memory;
  // open but quiet streams count as idle), so resident memory follows the load instead of its
  // high-water mark; under load the same memory serves the next requests without page faults. A
  // run that takes longer than a second is not idleness: trimming under it gave the next run all
  // its blocks afresh, which made it slower still. lipsync_memory_idle_trimmed shows when that is
  // done.
  std::atomic<bool> stopping{false};
  server::Metrics& metrics = (*server)->metrics();
  std::thread trimmer([&stopping, &metrics] {
    uint64_t frames_seen = metrics.frames();
    bool trimmed = false;
    while (!stopping) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const uint64_t frames = metrics.frames();
      const HostMemoryStats pool = HostMemory().stats();
      const bool idle = frames == frames_seen && pool.working_in_use == 0;
      if (!idle && trimmed) {
        trimmed = false;
        metrics.SetIdleTrimmed(false);
      }
      // While idle, blocks freed after the first trim (streams closing, the last batch's buffers)
      // are given back too: the heap is trimmed again whenever the pool gave something back.
      if (idle && (HostMemory().Trim(0) > 0 || !trimmed)) {
        platform::ReturnFreeHeapMemory();
        trimmed = true;
        metrics.SetIdleTrimmed(true);
      }
      // GPU arenas go only after a minute unused: an arena freed costs the next run an
      // allocation and its captured graphs.
      if (idle) TrimDeviceMemory(-1);
      // Under a host budget (the pool's limit, from the flag or the avatar config), memory freed
      // outside the pool (requests, frames) is given back while busy too: the pool's cache may
      // fill the budget's working share, and the heap's free pages beside it would stand past
      // the budget until the next idle second.
      if (!idle && pool.limit > 0) platform::ReturnFreeHeapMemory();
      frames_seen = frames;
    }
  });
  const std::string request = (*stop_requests)->Wait();
  stopping = true;
  trimmer.join();
  if (args.drain_delay_s > 0) {
    (*server)->MarkUnready();
    spdlog::info("received {}, unready: serving on for up to {} s (until another stop signal)",
                 request, args.drain_delay_s);
    (*stop_requests)->WaitFor(std::chrono::seconds(args.drain_delay_s));
  }
  spdlog::info("received {}, draining (up to {} s)", request, args.drain_timeout_s);
  (*server)->Shutdown();
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("serve", "Serve a model over gRPC (LipSync and KServe v2)");
  auto args = std::make_shared<ServeArgs>();
  AddEngineFlags(cmd, &args->engine, /*with_max_batch=*/false, /*model_required=*/false);
  cmd->add_option("--listen", args->server.listen, "gRPC address host:port")->capture_default_str();
  cmd->add_option("--metrics", args->server.metrics_listen,
                  "HTTP address for /metrics, /healthz, /readyz (e.g. 127.0.0.1:9090)");
  cmd->add_option("--model-name", args->server.model_name, "name clients use for the model")
      ->capture_default_str();
  cmd->add_option("--max-batch", args->server.batching.max_batch, "largest batch the server forms")
      ->capture_default_str();
  cmd->add_option("--preferred-batch", args->preferred_batch,
                  "batch size to form: auto (time the engine at start-up and take its most "
                  "efficient size up to --max-batch) or 1..max-batch")
      ->capture_default_str();
  cmd->add_option("--max-queue-delay-us", args->max_queue_delay_us,
                  "longest a frame waits for its batch to fill")
      ->capture_default_str();
  cmd->add_option("--max-queue", args->max_queue,
                  "frames waiting at most; beyond: RESOURCE_EXHAUSTED")
      ->capture_default_str();
  cmd->add_option("--drain-timeout-s", args->drain_timeout_s, "seconds to finish accepted calls")
      ->capture_default_str();
  cmd->add_option("--drain-delay-s", args->drain_delay_s,
                  "on a stop signal, first serve on this long with /readyz at 503 (a second "
                  "signal cuts it short) so balancers take the instance out")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600));
  cmd->add_option("--max-message-mb", args->max_message_mb, "largest request or response")
      ->capture_default_str();
  cmd->add_option("--tls-cert", args->server.tls_cert_file, "PEM certificate (enables TLS)");
  cmd->add_option("--tls-key", args->server.tls_key_file, "PEM private key");
  cmd->add_option("--tls-client-ca", args->server.tls_client_ca_file,
                  "PEM CA that client certificates must chain to (mutual TLS)");
  cmd->add_flag(
      "--monolithic", args->server.monolithic,
      "also serve monolithic.MonolithicService (the Go server's contract) over --avatars");
  cmd->add_option("--avatars", args->server.monolithic_options.avatars.root,
                  "avatar repository: a folder of avatar folders, or a YAML config (lipsync's or "
                  "the Go server's config.yaml); a request's model_id names an avatar; serves "
                  "live sessions (lipsync.v1.Sessions)");
  cmd->add_option("--preload", args->preload, "avatars to load before serving, e.g. anna,bob");
  auto* host_mb = cmd->add_option("--avatar-memory-mb", args->avatar_host_mb,
                                  "host memory budget for loaded avatars in MiB (0: none; "
                                  "least recently used idle avatars are evicted to stay within)");
  auto* gpu_mb = cmd->add_option("--avatar-gpu-memory-mb", args->avatar_gpu_mb,
                                 "GPU memory budget for loaded avatars in MiB (0: none)");
  auto* frames =
      cmd->add_option(
             "--avatar-frames", args->avatar_frames,
             "how loaded avatars keep their frames: decoded (fastest to serve) or encoded "
             "(the image files' bytes, a video's frames as PNG: a small part of the memory, "
             "one image decode per frame served)")
          ->check(CLI::IsMember({"decoded", "encoded"}))
          ->capture_default_str();
  cmd->add_option("--avatar-encoder", args->server.monolithic_options.avatars.audio_encoder,
                  "audio encoder ONNX for the Go server's models (when its config names none)");
  cmd->add_option("--avatar-cache", args->server.monolithic_options.avatars.cache_dir,
                  "folder where the Go server's models become avatar folders");
  cmd->add_option("--monolithic-listen", args->server.monolithic_listen,
                  "own host:port for the monolithic service (default: the --listen port)");
  cmd->add_flag("--lipsyncsrv", args->server.lipsyncsrv,
                "also serve lipsyncsrv.LipSyncService (the Python server's contract) over "
                "--avatars");
  cmd->add_option("--lipsyncsrv-listen", args->server.lipsyncsrv_listen,
                  "own host:port for the lipsyncsrv service (default: the --listen port)");
  cmd->add_option("--lipsyncsrv-encoder", args->server.lipsyncsrv_options.audio_encoder,
                  "audio encoder ONNX given to model packages that LoadModel imports");
  cmd->add_option("--lipsyncsrv-max-package-mb", args->lipsyncsrv_max_package_mb,
                  "largest unpacked size of a zip package that LoadModel imports, in MiB")
      ->capture_default_str();
  cmd->add_option("--monolithic-align", args->monolithic_align,
                  "which audio an output frame shows: lipsync (the frame the clients mean) or go "
                  "(the Go server's, 8 frames earlier), for side-by-side checks")
      ->capture_default_str();
  cmd->add_option("--monolithic-paste", args->monolithic_paste,
                  "where the face goes: lipsync (the centre of the rectangle's 328 crop) or go "
                  "(stretched over the whole rectangle)")
      ->capture_default_str();
  cmd->add_option("--lipsyncsrv-window", args->lipsyncsrv_window,
                  "a frame's audio window: lipsync (16 feature rows around the frame) or python "
                  "(the Python server's)")
      ->capture_default_str();
  auto* max_avatars =
      cmd->add_option("--max-avatars", args->server.monolithic_options.avatars.max_models,
                      "avatars loaded at once at most (flags win over the avatar config)")
          ->capture_default_str();
  cmd->add_option("--session-max-batch", args->server.sessions.max_batch,
                  "frames per model run of live sessions on one avatar")
      ->capture_default_str();
  cmd->add_option("--warmup-batch", args->server.monolithic_options.avatars.warmup_batch,
                  "run each avatar's UNet once at batches N..1 as it loads, so that no session "
                  "meets a batch size's first run (-1: --session-max-batch on a GPU, none on the "
                  "CPU; 0: none)")
      ->capture_default_str();
  cmd->add_option("--session-idle-timeout-s", args->session_idle_timeout_s,
                  "end a live session whose client sends nothing (or takes no frame) this long")
      ->capture_default_str();
  cmd->add_option("--max-sessions", args->server.sessions.max_sessions,
                  "live sessions open at once at most")
      ->capture_default_str();
  cmd->add_option("--log-level", args->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  cmd->callback([=] {
    auto& avatars = args->server.monolithic_options.avatars;
    avatars.max_models_set = max_avatars->count() > 0;
    avatars.max_host_set = host_mb->count() > 0;
    avatars.max_gpu_set = gpu_mb->count() > 0;
    avatars.frames_set = frames->count() > 0;
    *exit_code = RunServe(*args);
  });
}

}  // namespace lipsync::cli
