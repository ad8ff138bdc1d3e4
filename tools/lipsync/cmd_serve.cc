// `lipsync serve`: the gRPC server. Stops cleanly on SIGINT/SIGTERM: refuses new calls, finishes
// the accepted ones within the drain timeout, exits 0.
#include <malloc.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "commands.h"
#include "engine_flags.h"
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
  int max_message_mb = 64;
  std::string log_level = "info";
  int session_idle_timeout_s = 30;
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
  // Frames are megabytes and are allocated on many gRPC threads; glibc's default of one malloc
  // arena per thread lets freed blocks pile up per thread, and resident memory creeps up under
  // steady load. Two arenas keep it flat (see tests/server/soak.sh).
  mallopt(M_ARENA_MAX, 2);
  // By default glibc maps big blocks afresh and hands freed memory back at once, so every frame's
  // buffers took hundreds of page faults (a large share of the per-request cost). Keep them in
  // the heap for the next request instead; the trimmer below returns memory once the server idles.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(args.log_level));
  // Block the stop signals here so that every thread inherits the mask; one thread waits for them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // --avatars alone serves live sessions; --monolithic adds the Go server's contract over them.
  const bool has_avatars = !args.server.monolithic_options.avatars.root.empty();
  if ((args.server.monolithic && !has_avatars) ||
      (!args.server.monolithic_listen.empty() && !args.server.monolithic)) {
    return ReportError(
        InvalidArgument("--monolithic needs --avatars DIR (--monolithic-listen needs both)"));
  }
  args.server.sessions.idle_timeout = std::chrono::seconds(args.session_idle_timeout_s);
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  options->max_batch = args.server.batching.max_batch;
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
    spdlog::info("monolithic service on port {} over avatars in {}", (*server)->monolithic_port(),
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

  // Hand freed frame buffers back to the system when the server goes idle (a second in which no
  // frame finished; open but quiet streams count as idle), so resident memory follows the load
  // instead of its high-water mark; under load the same memory serves the next requests without
  // page faults.
  std::atomic<bool> stopping{false};
  server::Metrics& metrics = (*server)->metrics();
  std::thread trimmer([&stopping, &metrics] {
    uint64_t frames_seen = metrics.frames();
    bool trimmed = false;
    while (!stopping) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      const uint64_t frames = metrics.frames();
      const bool idle = frames == frames_seen;
      if (!idle) trimmed = false;
      if (idle && !trimmed) {
        malloc_trim(0);
        trimmed = true;
      }
      frames_seen = frames;
    }
  });
  int sig = 0;
  sigwait(&stop_signals, &sig);
  stopping = true;
  trimmer.join();
  spdlog::info("received {}, draining (up to {} s)", sig == SIGINT ? "SIGINT" : "SIGTERM",
               args.drain_timeout_s);
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
                  "folder of avatar folders (model id = folder name): serves live sessions, and "
                  "the monolithic service with --monolithic");
  cmd->add_option("--monolithic-listen", args->server.monolithic_listen,
                  "own host:port for the monolithic service (default: the --listen port)");
  cmd->add_option("--max-avatars", args->server.monolithic_options.avatars.max_models,
                  "avatars loaded at once at most")
      ->capture_default_str();
  cmd->add_option("--session-max-batch", args->server.sessions.max_batch,
                  "frames per model run of live sessions on one avatar")
      ->capture_default_str();
  cmd->add_option("--session-idle-timeout-s", args->session_idle_timeout_s,
                  "end a live session whose client sends nothing (or takes no frame) this long")
      ->capture_default_str();
  cmd->add_option("--max-sessions", args->server.sessions.max_sessions,
                  "live sessions open at once at most")
      ->capture_default_str();
  cmd->add_option("--log-level", args->log_level, "trace|debug|info|warn|error")
      ->capture_default_str();
  cmd->callback([=] { *exit_code = RunServe(*args); });
}

}  // namespace lipsync::cli
