// The KServe v2 model repository extension (proto/kserve/model_repository.proto) over the avatar
// repository: the index lists every avatar the server can load, load and unload drive the same
// AvatarRegistry as every other service. KServeService answers the rpcs with these.
#pragma once

#include <grpcpp/grpcpp.h>

#include "kserve/model_repository.pb.h"
#include "server/core/avatar_registry.h"

namespace lipsync::server {

// Index entries: "READY" (version "1") for loaded avatars; "UNAVAILABLE" with the reason for one
// unloaded, evicted or whose last load failed; empty state for one never loaded.
grpc::Status RepositoryIndex(AvatarRegistry& registry,
                             const inference::RepositoryIndexRequest& request,
                             inference::RepositoryIndexResponse* response);
// Loads the avatar (a loaded one stays as it is). Errors: NOT_FOUND for an unknown avatar,
// RESOURCE_EXHAUSTED when the cap or a budget cannot be met, the load's own errors otherwise.
grpc::Status RepositoryModelLoad(AvatarRegistry& registry,
                                 const inference::RepositoryModelLoadRequest& request);
// Unloads the avatar; OK for a known avatar that is not loaded, NOT_FOUND for an unknown one.
grpc::Status RepositoryModelUnload(AvatarRegistry& registry,
                                   const inference::RepositoryModelUnloadRequest& request);

}  // namespace lipsync::server
