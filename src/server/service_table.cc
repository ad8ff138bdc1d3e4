#include "server/service_table.h"

#include "server/server_impl.h"

namespace lipsync::server {
namespace {

bool WithEngine(const ServerOptions&, const ServiceInputs& in) { return in.engine; }
bool WithAvatars(const ServerOptions&, const ServiceInputs& in) { return in.avatars; }

}  // namespace

const std::vector<ServiceEntry>& ServiceTable() {
  static const std::vector<ServiceEntry> table = {
      {"lipsync.v1", nullptr, WithEngine,
       [](Server::Impl& impl, const ServerOptions&) -> grpc::Service* {
         impl.lipsync_service = std::make_unique<LipSyncService>(&impl.ctx);
         return impl.lipsync_service.get();
       }},
      {"kserve", nullptr, WithEngine,
       [](Server::Impl& impl, const ServerOptions&) -> grpc::Service* {
         impl.kserve_service = std::make_unique<KServeService>(&impl.ctx);
         return impl.kserve_service.get();
       }},
      {"sessions", nullptr, WithAvatars,
       [](Server::Impl& impl, const ServerOptions& o) -> grpc::Service* {
         impl.session_service = std::make_unique<SessionService>(impl.avatars.get(), o.sessions,
                                                                 &impl.metrics, &impl.gate);
         return impl.session_service.get();
       }},
      {"monolithic", &ServerOptions::monolithic_listen,
       [](const ServerOptions& o, const ServiceInputs& in) { return in.avatars && o.monolithic; },
       [](Server::Impl& impl, const ServerOptions& o) -> grpc::Service* {
         impl.monolithic_service = std::make_unique<MonolithicService>(
             o.monolithic_options, impl.avatars.get(), &impl.metrics, &impl.gate);
         return impl.monolithic_service.get();
       }},
      {"lipsyncsrv", &ServerOptions::lipsyncsrv_listen,
       [](const ServerOptions& o, const ServiceInputs& in) { return in.avatars && o.lipsyncsrv; },
       [](Server::Impl& impl, const ServerOptions& o) -> grpc::Service* {
         impl.lipsyncsrv_service = std::make_unique<LipSyncSrvService>(
             impl.avatars.get(), o.monolithic_options.avatars.root, o.lipsyncsrv_options,
             &impl.metrics, &impl.gate);
         return impl.lipsyncsrv_service.get();
       }},
  };
  return table;
}

std::vector<ListenerPlan> PlanListeners(const ServerOptions& options, const ServiceInputs& inputs) {
  std::vector<ListenerPlan> plan = {{options.listen, {}}};
  for (const ServiceEntry& entry : ServiceTable()) {
    if (!entry.enabled(options, inputs)) continue;
    const std::string own = entry.own_listen ? options.*entry.own_listen : std::string();
    if (own.empty()) {
      plan[0].services.push_back(&entry);
    } else {
      plan.push_back({own, {&entry}});
    }
  }
  return plan;
}

}  // namespace lipsync::server
