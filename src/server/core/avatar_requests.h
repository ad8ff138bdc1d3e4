// The avatar side of the avatar services' requests (monolithic and lipsyncsrv): a request names an
// avatar, which is resolved here with one wording of its errors, and loaded when it is not. The
// load runs on the registry's loader thread while the service's workers go on with other
// requests; the request continues on a worker once the avatar is there. The services only decode
// their requests, check what needs no avatar, and encode the answers.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "server/core/avatar_registry.h"
#include "server/core/metrics.h"
#include "server/core/worker_pool.h"

namespace lipsync::server {

// The avatar a request runs on, leased for as long as this is held.
struct AvatarLease {
  std::shared_ptr<LoadedAvatar> avatar;  // null for a request that needs none
  bool loaded_now = false;               // this request's resolution loaded it
  // The call's deadline (steady clock; max without one), for the request's work on the model.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// InvalidArgument naming `field` and the avatar's frame range unless 0 <= frame < its frames.
Status CheckFrameIndex(const LoadedAvatar& avatar, int64_t frame, const std::string& field);

class AvatarRequests {
 public:
  // Continues a request with its avatar, or with why it has none.
  using Continue = std::function<void(Result<AvatarLease>)>;
  // The avatar a request names; `field` is the request's name for the id (for its errors).
  struct Named {
    std::string id;
    std::string field = "model_id";
    bool none = false;  // the request needs no avatar (nothing to run)
  };

  // Requests run on `worker_threads` threads of their own, in arrival order.
  AvatarRequests(AvatarRegistry* registry, int worker_threads);
  // Waits for the work under way, the loads that requests wait on included, then joins.
  ~AvatarRequests();
  AvatarRequests(const AvatarRequests&) = delete;
  AvatarRequests& operator=(const AvatarRequests&) = delete;

  AvatarRegistry& registry() { return *registry_; }
  // Runs `work` on a worker (an exception it throws is logged).
  void Post(std::function<void()> work);

  // Resolves `named` and runs `then` with it: at once on the calling thread (a worker) when the
  // avatar is loaded or the id is bad, else on a worker once the loader thread has loaded it,
  // leaving the calling thread free meanwhile. `then` must not throw.
  void Resolve(const Named& named, Continue then);

  // A unary call of a service whose protocol answers failures inside the response: on a worker,
  // `name` checks what needs no avatar and names the avatar (or fails the request before any
  // load), the avatar is resolved, and `work` fills the response from it (or from the failure)
  // and returns the outcome. A call whose deadline passed before its avatar was there (while it
  // waited for a worker or the load) gets kDeadlineExceeded instead: a client that gave up is not
  // worth the model's time. The call finishes with gRPC OK; lipsync_requests_total counts it
  // once, under the outcome's code.
  grpc::ServerUnaryReactor* PostUnaryCall(Metrics* metrics, grpc::CallbackServerContext* call,
                                          const char* method, std::function<Result<Named>()> name,
                                          std::function<Status(Result<AvatarLease>)> work);

 private:
  // Work posted or waiting on a load and not yet done: the destructor waits for none left, so
  // that no load finishes into workers already gone.
  void Begin();
  void End();

  AvatarRegistry* registry_;
  std::mutex mu_;
  std::condition_variable idle_;
  int64_t under_way_ = 0;  // guarded by mu_
  WorkerPool workers_;     // last: its threads start once the rest is built
};

}  // namespace lipsync::server
