// What a running Server holds: shared by the shell (server.cc) and the service table, whose
// entries build their services into it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/core/avatar_registry.h"
#include "server/core/batcher.h"
#include "server/core/metrics.h"
#include "server/http_endpoint.h"
#include "server/protocols/kserve_service.h"
#include "server/protocols/lipsync_service.h"
#include "server/protocols/service_context.h"
#include "server/server.h"

namespace lipsync::server {

// One gRPC server: the main port (first) or a service's own port.
struct Listener {
  std::string address;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

struct Server::Impl {
  ServerOptions options;
  Metrics metrics;
  CallGate gate;  // counts the calls of every listener; closed while draining
  // The scheduler of the served model's device, shared with the avatars' UNets on that device.
  std::shared_ptr<runtime::Scheduler> scheduler;
  std::unique_ptr<Batcher> batcher;
  ServiceContext ctx;
  std::unique_ptr<LipSyncService> lipsync_service;
  std::unique_ptr<KServeService> kserve_service;
  std::unique_ptr<AvatarRegistry> avatars;  // outlives the services that use it
  std::unique_ptr<MonolithicService> monolithic_service;
  std::unique_ptr<LipSyncSrvService> lipsyncsrv_service;
  std::unique_ptr<SessionService> session_service;
  std::vector<Listener> listeners;           // [0]: the main port
  std::map<std::string, int> service_ports;  // by service table name; absent: not running
  std::unique_ptr<HttpEndpoint> http;
  std::mutex shutdown_mu;
  bool shut_down = false;
};

}  // namespace lipsync::server
