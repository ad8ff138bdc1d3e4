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
#include "server/batcher.h"
#include "server/metrics.h"

namespace lipsync::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free one
  std::string metrics_listen;              // host:port for /metrics; empty: no HTTP endpoint
  std::string model_name = "lipsync";
  BatcherOptions batching;
  int max_message_bytes = 64 << 20;
  std::chrono::milliseconds drain_timeout{10000};
  std::string tls_cert_file, tls_key_file, tls_client_ca_file;  // PEM files; empty: plaintext
};

class Server {
 public:
  static Result<std::unique_ptr<Server>> Start(Engine* engine, const ServerOptions& options);
  ~Server();

  int port() const;
  int metrics_port() const;
  Metrics& metrics();
  // The batch size the batcher forms when enough frames wait (chosen at start when it was auto).
  int preferred_batch() const;
  // Stops accepting calls, lets accepted ones finish (up to the drain timeout), then stops.
  void Shutdown();
  // Blocks until Shutdown() has finished.
  void Wait();

  struct Impl;

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lipsync::server
