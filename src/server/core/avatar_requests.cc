#include "server/core/avatar_requests.h"

#include <optional>

#include "runtime/catch_all.h"

namespace lipsync::server {

Status CheckFrameIndex(const LoadedAvatar& avatar, int64_t frame, const std::string& field) {
  const int64_t n = avatar.avatar.frame_count();
  if (frame >= 0 && frame < n) return Status::Ok();
  return InvalidArgument(field + " " + std::to_string(frame) + " is out of range: model '" +
                         avatar.id + "' has " + std::to_string(n) + " frames (0.." +
                         std::to_string(n - 1) + ")");
}

AvatarRequests::AvatarRequests(AvatarRegistry* registry, int worker_threads)
    : registry_(registry), workers_(worker_threads) {}

AvatarRequests::~AvatarRequests() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [this] { return under_way_ == 0; });
}

void AvatarRequests::Begin() {
  std::lock_guard lock(mu_);
  ++under_way_;
}

void AvatarRequests::End() {
  std::lock_guard lock(mu_);
  // Under the lock: the destructor may go as soon as it sees none left.
  if (--under_way_ == 0) idle_.notify_all();
}

void AvatarRequests::Post(std::function<void()> work) {
  Begin();
  workers_.Post([this, work = std::move(work)] {
    (void)runtime::CatchAll("avatar request", [&] {
      work();
      return Status::Ok();
    });
    End();
  });
}

void AvatarRequests::Resolve(const Named& named, Continue then) {
  auto run = [&then](Result<AvatarLease> lease) {
    (void)runtime::CatchAll("avatar request", [&] {
      then(std::move(lease));
      return Status::Ok();
    });
  };
  if (Status bad = CheckModelId(named.id, named.field); !bad.ok()) return run(bad);
  if (auto found = registry_->Find(named.id)) return run(AvatarLease{std::move(found), false});
  Begin();  // the load: the destructor waits for the request's continuation
  // The load goes to the loader thread; this thread is free for other requests until it is done.
  registry_->LoadAsync(named.id,
                       [this, then = std::move(then)](Result<std::shared_ptr<LoadedAvatar>> avatar,
                                                      bool loaded_now) {
                         // Back to a worker: the loader goes on with the next load meanwhile.
                         Post([then, avatar = std::move(avatar), loaded_now] {
                           if (avatar.ok()) {
                             then(AvatarLease{*avatar, loaded_now});
                           } else {
                             then(avatar.status());
                           }
                         });
                         End();  // after Post has counted the continuation
                       });
}

grpc::ServerUnaryReactor* AvatarRequests::PostUnaryCall(
    Metrics* metrics, grpc::CallbackServerContext* call, const char* method,
    std::function<Result<Named>()> name, std::function<Status(Result<AvatarLease>)> work) {
  auto* reactor = call->DefaultReactor();
  if (metrics) metrics->AddInFlight(1);
  const auto deadline = SteadyDeadline(call);
  Continue finish = [metrics, reactor, method, deadline,
                     work = std::move(work)](Result<AvatarLease> lease) {
    if (lease.ok()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        lease = Status(StatusCode::kDeadlineExceeded, "the call's deadline passed before it ran");
      } else {
        lease->deadline = deadline;
      }
    }
    FinishUnaryCall(metrics, reactor, method, [&] { return work(std::move(lease)); });
  };
  Post([this, method, name = std::move(name), finish] {
    std::optional<Result<Named>> named;
    const Status thrown = runtime::CatchAll(method, [&] {
      named.emplace(name());
      return Status::Ok();
    });
    if (!thrown.ok()) return finish(thrown);
    if (!named->ok()) return finish(named->status());
    if ((*named)->none) return finish(AvatarLease{});
    Resolve(**named, finish);
  });
  return reactor;
}

}  // namespace lipsync::server
