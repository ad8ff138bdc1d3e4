// The lipsync server: gRPC services (LipSync, KServe v2, health, reflection) over one dynamic
// batcher, plus the HTTP metrics and probe endpoint.
//
//   auto engine = lipsync::Engine::Create("model.onnx", {});
//   lipsync::server::ServerOptions options;               // loopback, port 50051
//   auto server = lipsync::server::Server::Start(engine->get(), options);
//   ...
//   (*server)->Shutdown();                                // drain, then stop
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "lipsync/engine.h"
#include "server/core/batcher.h"
#include "server/core/metrics.h"
#include "server/protocols/lipsyncsrv_service.h"
#include "server/protocols/monolithic_service.h"
#include "server/protocols/session_service.h"

namespace lipsync::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free one
  std::string metrics_listen;              // host:port for /metrics; empty: no HTTP endpoint
  std::string model_name = "lipsync";
  BatcherOptions batching;
  int max_message_bytes = 64 << 20;
  std::chrono::milliseconds drain_timeout{10000};
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;  // PEM files; empty: plaintext
  // monolithic.MonolithicService (the Go server's contract) over the avatar repository, on the
  // main port or, when monolithic_listen is set, on its own. The repository (its options are
  // monolithic_options.avatars; root: a folder or a YAML config) exists whenever root is set, with
  // the KServe model repository extension and per-avatar metrics, with or without this service.
  bool monolithic = false;
  std::string monolithic_listen;
  MonolithicOptions monolithic_options;
  // lipsync.v1.Sessions (live audio sessions) over the same avatar folders: on whenever
  // monolithic_options.avatars.root is set, sharing the monolithic service's avatars when it runs.
  SessionOptions sessions;
  // lipsyncsrv.LipSyncService (the Python server's contract) over the same avatar folders
  // (monolithic_options.avatars, one registry when both are on), on the main port or, when
  // lipsyncsrv_listen is set, on its own.
  bool lipsyncsrv = false;
  std::string lipsyncsrv_listen;
  LipSyncSrvOptions lipsyncsrv_options;
};

class Server {
 public:
  // `engine` may be null when monolithic_options.avatars.root is set: then only the avatar
  // services run (live sessions, and the compatibility services when asked, each on the main
  // port or its own).
  static Result<std::unique_ptr<Server>> Start(Engine* engine, const ServerOptions& options);
  ~Server();

  int port() const;
  int metrics_port() const;
  // The port of the monolithic service: its own, or the main one (0 when it is off).
  int monolithic_port() const;
  MonolithicService* monolithic_service();
  SessionService* session_service();  // nullptr without avatars
  // The avatar repository (monolithic_options.avatars), or nullptr when the server has no avatars.
  AvatarRegistry* avatars();
  // The port of the lipsyncsrv service: its own, or the main one (0 when it is off).
  int lipsyncsrv_port() const;
  Metrics& metrics();
  // The scheduler of the served model's device (null without a model of its own).
  runtime::Scheduler* scheduler();
  // The batch size the batcher forms when enough frames wait (chosen at start when it was auto).
  int preferred_batch() const;
  // Turns /readyz to 503 and gRPC health to NOT_SERVING while calls are still served, so that a
  // balancer watching either takes this instance out before Shutdown() refuses calls.
  void MarkUnready();
  // Stops accepting calls, lets accepted ones finish (up to the drain timeout), then stops.
  void Shutdown();
  // Blocks until Shutdown() has finished.
  void Wait();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  static Result<std::unique_ptr<Server>> StartAvatarsOnly(const ServerOptions& options);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lipsync::server
