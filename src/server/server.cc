#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <mutex>
#include <sstream>

#include "server/core/batch_tuning.h"
#include "server/http_endpoint.h"
#include "server/protocols/kserve_service.h"
#include "server/protocols/lipsync_service.h"

namespace lipsync::server {

struct Server::Impl {
  ServerOptions options;
  Metrics metrics;
  // The scheduler of the served model's device, shared with the avatars' UNets on that device.
  std::shared_ptr<Scheduler> scheduler;
  std::unique_ptr<Batcher> batcher;
  ServiceContext ctx;
  std::unique_ptr<LipSyncService> lipsync_service;
  std::unique_ptr<KServeService> kserve_service;
  std::unique_ptr<AvatarRegistry> avatars;  // outlives the services that use it
  std::unique_ptr<MonolithicService> monolithic_service;
  std::unique_ptr<LipSyncSrvService> lipsyncsrv_service;
  std::unique_ptr<SessionService> session_service;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<grpc::Server> monolithic_server;  // when it has its own port
  int monolithic_port = 0;
  std::unique_ptr<grpc::Server> lipsyncsrv_server;  // when it has its own port
  int lipsyncsrv_port = 0;
  std::unique_ptr<HttpEndpoint> http;
  int port = 0;
  std::mutex shutdown_mu;
  bool shut_down = false;
};

namespace {

Result<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return NotFound(std::string("cannot read the TLS ") + what + " '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  if (ss.str().find("-----BEGIN") == std::string::npos) {
    return InvalidArgument(std::string("the TLS ") + what + " '" + path + "' is not PEM");
  }
  return ss.str();
}

Result<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert_file.empty() && o.tls_key_file.empty()) {
    if (!o.tls_client_ca_file.empty()) {
      return InvalidArgument("a client CA file needs the server's certificate and key files");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert_file.empty() || o.tls_key_file.empty()) {
    return InvalidArgument("TLS needs both a certificate file and a key file");
  }
  grpc::SslServerCredentialsOptions ssl;
  LIPSYNC_ASSIGN_OR_RETURN(std::string cert, ReadPem(o.tls_cert_file, "certificate"));
  LIPSYNC_ASSIGN_OR_RETURN(std::string key, ReadPem(o.tls_key_file, "key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!o.tls_client_ca_file.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(o.tls_client_ca_file, "client CA"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(); }

namespace {

// Times the engine at each batch size up to max_batch and takes its most efficient one, logging
// the timings (they take seconds on a CPU).
Result<int> ChoosePreferredBatch(Engine& engine, int max_batch) {
  if (max_batch == 1) return 1;
  spdlog::info("timing the engine at batch sizes up to {} to choose the batch size", max_batch);
  BatchTuningOptions tuning_options;
  tuning_options.max_batch = max_batch;
  auto tuning = TunePreferredBatch(engine, tuning_options, [](const BatchTiming& t) {
    spdlog::info("  batch {}: {:.2f} ms per frame", t.batch, t.ms_per_frame);
  });
  if (!tuning.ok()) return tuning.status().WithContext("choosing the batch size");
  spdlog::info("preferred batch {} (the smallest within 5% of the best time per frame)",
               tuning->preferred_batch);
  return tuning->preferred_batch;
}

// The avatar repository and every service that serves from it; preloads finish before serving.
// A server without avatars gets none of them (and an error when one was asked for).
Status StartAvatarServices(Server::Impl& impl, const ServerOptions& options) {
  if (options.monolithic_options.avatars.root.empty()) {
    if (options.monolithic) return InvalidArgument("the monolithic service needs avatars");
    if (options.lipsyncsrv) return InvalidArgument("the lipsyncsrv service needs avatars");
    return Status::Ok();
  }
  AvatarRegistryOptions avatars = options.monolithic_options.avatars;
  avatars.scheduler = impl.scheduler;
  LIPSYNC_ASSIGN_OR_RETURN(impl.avatars, AvatarRegistry::Create(std::move(avatars)));
  impl.avatars->scheduler().SetMetrics(&impl.metrics);
  LIPSYNC_RETURN_IF_ERROR(impl.avatars->Preload());
  AvatarRegistry* registry = impl.avatars.get();
  impl.ctx.avatars = registry;
  impl.metrics.AddCollector([registry](std::string* out) { registry->RenderPrometheus(out); });
  if (options.monolithic) {
    impl.monolithic_service =
        std::make_unique<MonolithicService>(options.monolithic_options, registry, &impl.metrics);
  }
  if (options.lipsyncsrv) {
    impl.lipsyncsrv_service =
        std::make_unique<LipSyncSrvService>(registry, options.monolithic_options.avatars.root,
                                            options.lipsyncsrv_options, &impl.metrics);
  }
  impl.session_service =
      std::make_unique<SessionService>(registry, options.sessions, &impl.metrics);
  return Status::Ok();
}

// The monolithic service's batches of 32 faces are 79 MB; its clients expect 100 MB to pass.
int MessageBytes(const ServerOptions& options) {
  return options.monolithic ? std::max(options.max_message_bytes, kMonolithicMessageBytes)
                            : options.max_message_bytes;
}

// A gRPC server for `services` on `address`; null (and *port 0) when it cannot listen there.
std::unique_ptr<grpc::Server> BuildGrpcServer(
    const std::string& address, const std::shared_ptr<grpc::ServerCredentials>& credentials,
    int message_bytes, const std::vector<grpc::Service*>& services, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, credentials, port);
  // gRPC shares a port with any socket that allows it by default: a second server would start
  // and take half of the first one's connections. A port in use is an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(message_bytes);
  builder.SetMaxSendMessageSize(message_bytes);
  // Frames are hundreds of kilobytes: start each stream with a window that holds a whole request
  // instead of growing it from 64 KiB with extra round trips of flow-control updates.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  for (grpc::Service* service : services) builder.RegisterService(service);
  auto server = builder.BuildAndStart();
  return server && *port != 0 ? std::move(server) : nullptr;
}

Status CannotListen(const std::string& address) {
  return Unavailable("cannot listen on " + address +
                     " (port in use, or not an address of this machine)");
}

void ShutdownGrpc(Server::Impl& impl) {
  for (auto* server :
       {impl.grpc_server.get(), impl.monolithic_server.get(), impl.lipsyncsrv_server.get()}) {
    if (server) server->Shutdown();
  }
}

// A compatibility service on a port of its own; when it cannot listen there, every gRPC server
// started so far stops.
Status StartOwnPort(Server::Impl& impl, const std::string& address,
                    const std::shared_ptr<grpc::ServerCredentials>& credentials, int message_bytes,
                    grpc::Service* service, std::unique_ptr<grpc::Server>* server, int* port) {
  *server = BuildGrpcServer(address, credentials, message_bytes, {service}, port);
  if (*server) return Status::Ok();
  ShutdownGrpc(impl);
  return CannotListen(address);
}

// The compatibility services that go on the main port (those without a port of their own).
void AddMainPortCompatServices(Server::Impl& impl, const ServerOptions& options,
                               std::vector<grpc::Service*>* services) {
  if (impl.monolithic_service && options.monolithic_listen.empty()) {
    services->push_back(impl.monolithic_service.get());
  }
  if (impl.lipsyncsrv_service && options.lipsyncsrv_listen.empty()) {
    services->push_back(impl.lipsyncsrv_service.get());
  }
}

// After the main port: the compatibility services' own ports, when asked for (the old servers'
// clients call 50053 and 50051).
Status StartCompatPorts(Server::Impl& impl, const ServerOptions& options,
                        const std::shared_ptr<grpc::ServerCredentials>& credentials,
                        int message_bytes) {
  if (impl.monolithic_service) impl.monolithic_port = impl.port;
  if (impl.monolithic_service && !options.monolithic_listen.empty()) {
    LIPSYNC_RETURN_IF_ERROR(StartOwnPort(impl, options.monolithic_listen, credentials,
                                         message_bytes, impl.monolithic_service.get(),
                                         &impl.monolithic_server, &impl.monolithic_port));
  }
  if (impl.lipsyncsrv_service) impl.lipsyncsrv_port = impl.port;
  if (impl.lipsyncsrv_service && !options.lipsyncsrv_listen.empty()) {
    LIPSYNC_RETURN_IF_ERROR(StartOwnPort(impl, options.lipsyncsrv_listen, credentials,
                                         message_bytes, impl.lipsyncsrv_service.get(),
                                         &impl.lipsyncsrv_server, &impl.lipsyncsrv_port));
  }
  return Status::Ok();
}

// The HTTP endpoint (metrics and probes) when one is asked for; on failure the gRPC servers stop.
Status StartHttp(Server::Impl& impl, const ServerOptions& options) {
  if (options.metrics_listen.empty()) return Status::Ok();
  Server::Impl* raw = &impl;
  auto http = HttpEndpoint::Start(
      options.metrics_listen,
      {[raw] { return raw->metrics.RenderPrometheus(); }, [raw] { return raw->ctx.ready.load(); }});
  if (!http.ok()) {
    ShutdownGrpc(impl);
    return http.status();
  }
  impl.http = std::move(*http);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Server>> Server::Start(Engine* engine, const ServerOptions& options) {
  if (!engine) return StartAvatarsOnly(options);
  if (options.batching.max_batch < 1) {
    return InvalidArgument("the largest batch must be at least 1");
  }
  if (options.batching.max_batch > engine->info().max_batch) {
    return InvalidArgument("largest batch " + std::to_string(options.batching.max_batch) +
                           " exceeds the model's limit of " +
                           std::to_string(engine->info().max_batch));
  }
  if (options.batching.preferred_batch != BatcherOptions::kAutoPreferredBatch &&
      (options.batching.preferred_batch < 0 ||
       options.batching.preferred_batch > options.batching.max_batch)) {
    return InvalidArgument("preferred batch " + std::to_string(options.batching.preferred_batch) +
                           " must be between 1 and the largest batch (" +
                           std::to_string(options.batching.max_batch) + ")");
  }
  if (options.batching.max_queue < static_cast<size_t>(options.batching.max_batch)) {
    return InvalidArgument("the queue (" + std::to_string(options.batching.max_queue) +
                           " requests) must hold at least one largest batch (" +
                           std::to_string(options.batching.max_batch) + ")");
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(options.listen));
  LIPSYNC_ASSIGN_OR_RETURN(auto credentials, Credentials(options));

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  LIPSYNC_ASSIGN_OR_RETURN(impl->ctx.spec, ModelSpec::FromEngine(*engine, options.model_name,
                                                                 options.batching.max_batch));
  BatcherOptions batching = options.batching;
  if (batching.preferred_batch == BatcherOptions::kAutoPreferredBatch) {
    LIPSYNC_ASSIGN_OR_RETURN(batching.preferred_batch,
                             ChoosePreferredBatch(*engine, batching.max_batch));
  }
  SchedulerOptions device;
  const int gpu = engine->capabilities().device_id;
  device.device = gpu >= 0 ? "cuda:" + std::to_string(gpu) : "cpu";
  impl->scheduler = std::make_shared<Scheduler>(device);
  impl->scheduler->SetMetrics(&impl->metrics);
  impl->batcher = std::make_unique<Batcher>(engine, batching, &impl->metrics, impl->scheduler,
                                            options.model_name);
  impl->ctx.engine = engine;
  impl->ctx.batcher = impl->batcher.get();
  impl->ctx.metrics = &impl->metrics;
  impl->ctx.max_queue_delay_us = options.batching.max_queue_delay.count();
  impl->ctx.max_queue = static_cast<int64_t>(options.batching.max_queue);
  impl->lipsync_service = std::make_unique<LipSyncService>(&impl->ctx);
  impl->kserve_service = std::make_unique<KServeService>(&impl->ctx);
  LIPSYNC_RETURN_IF_ERROR(StartAvatarServices(*impl, options));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const int message_bytes = MessageBytes(options);
  std::vector<grpc::Service*> services = {impl->lipsync_service.get(), impl->kserve_service.get()};
  if (impl->session_service) services.push_back(impl->session_service.get());
  AddMainPortCompatServices(*impl, options, &services);
  impl->grpc_server =
      BuildGrpcServer(options.listen, credentials, message_bytes, services, &impl->port);
  if (!impl->grpc_server) return CannotListen(options.listen);
  LIPSYNC_RETURN_IF_ERROR(StartCompatPorts(*impl, options, credentials, message_bytes));
  LIPSYNC_RETURN_IF_ERROR(StartHttp(*impl, options));
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  impl->ctx.ready = true;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

// No model of its own: only the avatar services (live sessions on the main port, and the
// compatibility services when asked, on the main port or their own).
Result<std::unique_ptr<Server>> Server::StartAvatarsOnly(const ServerOptions& options) {
  if (options.monolithic_options.avatars.root.empty()) {
    return InvalidArgument("the server needs a model or an avatar folder");
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto host_port, SplitHostPort(options.listen));
  (void)host_port;
  LIPSYNC_ASSIGN_OR_RETURN(auto credentials, Credentials(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->ctx.metrics = &impl->metrics;
  LIPSYNC_RETURN_IF_ERROR(StartAvatarServices(*impl, options));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::vector<grpc::Service*> services = {impl->session_service.get()};
  AddMainPortCompatServices(*impl, options, &services);
  const int message_bytes = MessageBytes(options);
  impl->grpc_server =
      BuildGrpcServer(options.listen, credentials, message_bytes, services, &impl->port);
  if (!impl->grpc_server) return CannotListen(options.listen);
  LIPSYNC_RETURN_IF_ERROR(StartCompatPorts(*impl, options, credentials, message_bytes));
  LIPSYNC_RETURN_IF_ERROR(StartHttp(*impl, options));
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  impl->ctx.ready = true;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

int Server::port() const { return impl_->port; }
int Server::metrics_port() const { return impl_->http ? impl_->http->port() : 0; }
int Server::monolithic_port() const { return impl_->monolithic_port; }
MonolithicService* Server::monolithic_service() { return impl_->monolithic_service.get(); }
SessionService* Server::session_service() { return impl_->session_service.get(); }
AvatarRegistry* Server::avatars() { return impl_->avatars.get(); }
int Server::lipsyncsrv_port() const { return impl_->lipsyncsrv_port; }
Metrics& Server::metrics() { return impl_->metrics; }
Scheduler* Server::scheduler() { return impl_->scheduler.get(); }
int Server::preferred_batch() const { return impl_->batcher ? impl_->batcher->batch_limit() : 0; }

void Server::MarkUnready() {
  std::lock_guard lock(impl_->shutdown_mu);
  if (impl_->shut_down) return;
  impl_->ctx.ready = false;
  impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
}

void Server::Shutdown() {
  std::lock_guard lock(impl_->shutdown_mu);
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->ctx.ready = false;
  impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
  // gRPC refuses new calls at once and waits for accepted ones, which the batcher keeps serving;
  // past the drain deadline it cancels what is left.
  const auto deadline = std::chrono::system_clock::now() + impl_->options.drain_timeout;
  if (impl_->monolithic_server) impl_->monolithic_server->Shutdown(deadline);
  if (impl_->lipsyncsrv_server) impl_->lipsyncsrv_server->Shutdown(deadline);
  impl_->grpc_server->Shutdown(deadline);
  if (impl_->batcher) impl_->batcher->Shutdown(std::chrono::milliseconds(0));
  impl_->grpc_server->Wait();
  if (impl_->monolithic_server) impl_->monolithic_server->Wait();
  if (impl_->lipsyncsrv_server) impl_->lipsyncsrv_server->Wait();
  if (impl_->http) impl_->http->Stop();
}

void Server::Wait() { impl_->grpc_server->Wait(); }

}  // namespace lipsync::server
