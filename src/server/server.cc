#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "server/core/batch_tuning.h"
#include "server/server_impl.h"
#include "server/service_table.h"

namespace lipsync::server {

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

// How long after its last call ended a drained server closes its connections: the last answers
// leave and the clients' acknowledgements arrive in well under this on the networks it serves.
constexpr auto kAnswersLeave = std::chrono::milliseconds(250);

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

// The avatar repository, which the avatar services serve from; preloads finish before serving.
// A server without avatars gets none (and an error when an avatar service was asked for).
Status StartAvatars(Server::Impl& impl, const ServerOptions& options) {
  if (options.monolithic_options.avatars.root.empty()) {
    if (options.monolithic) return InvalidArgument("the monolithic service needs avatars");
    if (options.lipsyncsrv) return InvalidArgument("the lipsyncsrv service needs avatars");
    return Status::Ok();
  }
  AvatarRegistryOptions avatars = options.monolithic_options.avatars;
  avatars.scheduler = impl.scheduler;
  LIPSYNC_ASSIGN_OR_RETURN(impl.avatars, AvatarRegistry::Create(std::move(avatars)));
  impl.avatars->scheduler().SetListener(&impl.metrics);
  // Sessions' batch limit before the preloads, which warm each UNet up to it.
  impl.avatars->scheduler().SetLiveMaxBatch(options.sessions.max_batch);
  LIPSYNC_RETURN_IF_ERROR(impl.avatars->Preload());
  AvatarRegistry* registry = impl.avatars.get();
  impl.ctx.avatars = registry;
  impl.metrics.AddCollector([registry](std::string* out) { registry->RenderPrometheus(out); });
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
    int message_bytes, const std::vector<grpc::Service*>& services, CallGate* gate, int* port) {
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
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> counters;
  counters.push_back(gate->CallCounter());
  builder.experimental().SetInterceptorCreators(std::move(counters));
  auto server = builder.BuildAndStart();
  return server && *port != 0 ? std::move(server) : nullptr;
}

Status CannotListen(const std::string& address) {
  return Unavailable("cannot listen on " + address +
                     " (port in use, or not an address of this machine)");
}

void ShutdownGrpc(Server::Impl& impl) {
  for (auto& listener : impl.listeners) listener.server->Shutdown();
}

// Builds the services of the table that are enabled and starts their listeners, the main port
// first; when one cannot listen, every gRPC server started so far stops.
Status StartServices(Server::Impl& impl, const ServerOptions& options,
                     const std::shared_ptr<grpc::ServerCredentials>& credentials) {
  const ServiceInputs inputs{impl.ctx.engine != nullptr, impl.avatars != nullptr};
  std::map<const ServiceEntry*, grpc::Service*> built;
  for (const ServiceEntry& entry : ServiceTable()) {
    if (entry.enabled(options, inputs)) built[&entry] = entry.build(impl, options);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  const int message_bytes = MessageBytes(options);
  for (const ListenerPlan& plan : PlanListeners(options, inputs)) {
    std::vector<grpc::Service*> services;
    for (const ServiceEntry* entry : plan.services) services.push_back(built.at(entry));
    Listener listener{plan.address, nullptr, 0};
    listener.server = BuildGrpcServer(plan.address, credentials, message_bytes, services,
                                      &impl.gate, &listener.port);
    if (!listener.server) {
      ShutdownGrpc(impl);
      return CannotListen(plan.address);
    }
    for (const ServiceEntry* entry : plan.services) impl.service_ports[entry->name] = listener.port;
    impl.listeners.push_back(std::move(listener));
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
  runtime::SchedulerOptions device;
  const int gpu = engine->capabilities().device_id;
  device.device = gpu >= 0 ? "cuda:" + std::to_string(gpu) : "cpu";
  impl->scheduler = std::make_shared<runtime::Scheduler>(device);
  impl->scheduler->SetListener(&impl->metrics);
  impl->batcher = std::make_unique<Batcher>(engine, batching, &impl->metrics, impl->scheduler,
                                            options.model_name);
  impl->ctx.engine = engine;
  impl->ctx.batcher = impl->batcher.get();
  impl->ctx.metrics = &impl->metrics;
  impl->ctx.max_queue_delay_us = options.batching.max_queue_delay.count();
  impl->ctx.max_queue = static_cast<int64_t>(options.batching.max_queue);
  impl->ctx.gate = &impl->gate;
  LIPSYNC_RETURN_IF_ERROR(StartAvatars(*impl, options));
  LIPSYNC_RETURN_IF_ERROR(StartServices(*impl, options, credentials));
  LIPSYNC_RETURN_IF_ERROR(StartHttp(*impl, options));
  impl->listeners[0].server->GetHealthCheckService()->SetServingStatus(true);
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
  impl->ctx.gate = &impl->gate;
  LIPSYNC_RETURN_IF_ERROR(StartAvatars(*impl, options));
  LIPSYNC_RETURN_IF_ERROR(StartServices(*impl, options, credentials));
  LIPSYNC_RETURN_IF_ERROR(StartHttp(*impl, options));
  impl->listeners[0].server->GetHealthCheckService()->SetServingStatus(true);
  impl->ctx.ready = true;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

namespace {

int PortOf(const Server::Impl& impl, const std::string& service) {
  auto it = impl.service_ports.find(service);
  return it == impl.service_ports.end() ? 0 : it->second;
}

}  // namespace

int Server::port() const { return impl_->listeners[0].port; }
int Server::metrics_port() const { return impl_->http ? impl_->http->port() : 0; }
int Server::monolithic_port() const { return PortOf(*impl_, "monolithic"); }
MonolithicService* Server::monolithic_service() { return impl_->monolithic_service.get(); }
SessionService* Server::session_service() { return impl_->session_service.get(); }
AvatarRegistry* Server::avatars() { return impl_->avatars.get(); }
int Server::lipsyncsrv_port() const { return PortOf(*impl_, "lipsyncsrv"); }
Metrics& Server::metrics() { return impl_->metrics; }
runtime::Scheduler* Server::scheduler() { return impl_->scheduler.get(); }
int Server::preferred_batch() const { return impl_->batcher ? impl_->batcher->batch_limit() : 0; }

void Server::MarkUnready() {
  std::lock_guard lock(impl_->shutdown_mu);
  if (impl_->shut_down) return;
  impl_->ctx.ready = false;
  impl_->listeners[0].server->GetHealthCheckService()->SetServingStatus(false);
}

void Server::Shutdown() {
  std::lock_guard lock(impl_->shutdown_mu);
  if (impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->ctx.ready = false;
  auto& listeners = impl_->listeners;
  listeners[0].server->GetHealthCheckService()->SetServingStatus(false);
  // The services refuse new calls from here on while the open ones run to their end. Once none
  // is open, the answers get a moment to leave and the clients' last flow-control bytes to
  // arrive: gRPC closes a connection as soon as it has no call left, and closing one with bytes
  // unread resets it, dropping what was not yet sent.
  impl_->gate.Close();
  // No more frames will come to keep a waiting one company.
  if (impl_->scheduler) impl_->scheduler->StopWaiting();
  if (impl_->avatars) impl_->avatars->scheduler().StopWaiting();
  const auto drain = impl_->options.drain_timeout;
  const auto deadline = std::chrono::system_clock::now() + drain;
  if (impl_->gate.WaitForOpenCalls(std::chrono::steady_clock::now() + drain)) {
    std::this_thread::sleep_until(impl_->gate.last_ended() + kAnswersLeave);
  }
  // gRPC then refuses calls itself and cancels what is still open past the drain deadline.
  // The services' own ports first, then the main one.
  for (size_t i = 1; i < listeners.size(); ++i) listeners[i].server->Shutdown(deadline);
  listeners[0].server->Shutdown(deadline);
  if (impl_->batcher) impl_->batcher->Shutdown(std::chrono::milliseconds(0));
  for (auto& listener : listeners) listener.server->Wait();
  if (impl_->http) impl_->http->Stop();
}

void Server::Wait() { impl_->listeners[0].server->Wait(); }

}  // namespace lipsync::server
