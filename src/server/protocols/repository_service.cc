#include "server/protocols/repository_service.h"

#include <algorithm>

#include "server/protocols/request_codec.h"

namespace lipsync::server {
namespace {

bool Known(AvatarRegistry& registry, const std::string& name) {
  const auto states = registry.States();
  return std::any_of(states.begin(), states.end(),
                     [&](const AvatarState& s) { return s.id == name; });
}

}  // namespace

grpc::Status RepositoryIndex(AvatarRegistry& registry,
                             const inference::RepositoryIndexRequest& request,
                             inference::RepositoryIndexResponse* response) {
  for (const AvatarState& s : registry.States()) {
    if (request.ready() && !s.loaded) continue;
    auto* model = response->add_models();
    model->set_name(s.id);
    if (s.loaded) {
      model->set_version("1");
      model->set_state("READY");
    } else if (!s.reason.empty()) {
      model->set_state("UNAVAILABLE");
      model->set_reason(s.reason);
    }
  }
  return grpc::Status::OK;
}

grpc::Status RepositoryModelLoad(AvatarRegistry& registry,
                                 const inference::RepositoryModelLoadRequest& request) {
  auto loaded = registry.Load(request.model_name());
  return loaded.ok() ? grpc::Status::OK : ToGrpcStatus(loaded.status());
}

grpc::Status RepositoryModelUnload(AvatarRegistry& registry,
                                   const inference::RepositoryModelUnloadRequest& request) {
  Status unloaded = registry.Unload(request.model_name());
  if (unloaded.ok()) return grpc::Status::OK;
  if (unloaded.code() == StatusCode::kNotFound && Known(registry, request.model_name())) {
    return grpc::Status::OK;  // known and already not loaded
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown model " + Quoted(request.model_name()));
}

}  // namespace lipsync::server
