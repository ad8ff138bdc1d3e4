// The gRPC services the server can run, one entry each: its name, the option naming its own
// port (else it goes on the main port), when it runs and how it is built. The server walks the
// table to build, register, drain and stop them, so a new protocol is one more entry.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "server/server.h"

namespace lipsync::server {

// What this server has to serve from: a model (the batcher) and avatars (the repository).
struct ServiceInputs {
  bool engine = false;
  bool avatars = false;
};

struct ServiceEntry {
  const char* name;
  // The option that gives the service a port of its own; null, or the option empty: main port.
  std::string ServerOptions::*own_listen;
  bool (*enabled)(const ServerOptions& options, const ServiceInputs& inputs);
  // Builds the service into `impl` (which owns it) and returns it for registration.
  grpc::Service* (*build)(Server::Impl& impl, const ServerOptions& options);
};

// Every service, in registration order.
const std::vector<ServiceEntry>& ServiceTable();

// One gRPC server to start: its address and the table entries registered on it.
struct ListenerPlan {
  std::string address;
  std::vector<const ServiceEntry*> services;
};

// The listeners to start, in order: the main port first (options.listen), then each enabled
// service's own port in table order. Disabled services are on none.
std::vector<ListenerPlan> PlanListeners(const ServerOptions& options, const ServiceInputs& inputs);

}  // namespace lipsync::server
