// A fixed set of threads that run posted work in the order it arrives. The avatar services' gRPC
// callbacks only post, so the slow part of a call (the model, compositing, JPEG) never holds one
// of gRPC's own threads. The destructor runs what was posted, then joins.
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include "lipsync/status.h"
#include "runtime/catch_all.h"
#include "server/core/metrics.h"

namespace lipsync::server {

// The call's gRPC deadline on the steady clock (far future when the client set none).
inline std::chrono::steady_clock::time_point SteadyDeadline(
    const grpc::CallbackServerContext* ctx) {
  using Steady = std::chrono::steady_clock;
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return Steady::time_point::max();
  const auto left = deadline - std::chrono::system_clock::now();
  return Steady::now() + std::chrono::duration_cast<Steady::duration>(left);
}

class WorkerPool {
 public:
  // `on_start` runs first on each thread (to name it, or lower its priority).
  explicit WorkerPool(int threads, std::function<void()> on_start = {}) {
    for (int i = 0; i < std::max(1, threads); ++i) {
      threads_.emplace_back([this, on_start] {
        if (on_start) on_start();
        Loop();
      });
    }
  }
  ~WorkerPool() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Post(std::function<void()> work) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(work));
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    for (;;) {
      std::function<void()> work;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left
        work = std::move(queue_.front());
        queue_.pop_front();
      }
      (void)runtime::CatchAll("worker", [&] {
        work();
        return Status::Ok();
      });
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;  // last: they start once the rest is built
};

// The end of a unary call of the compatibility services, whose protocols answer failures inside
// the response: runs `work`, finishes the call with gRPC OK, and counts it in
// lipsync_requests_total under the code of the outcome `work` returns, so that failures are still
// seen (the call was counted in flight when it arrived).
inline void FinishUnaryCall(Metrics* metrics, grpc::ServerUnaryReactor* reactor, const char* method,
                            const std::function<Status()>& work) {
  const Status outcome = runtime::CatchAll(method, work);
  if (metrics) {
    metrics->RecordRequest(method, StatusCodeName(outcome.code()));
    metrics->AddInFlight(-1);
  }
  reactor->Finish(grpc::Status::OK);
}

// A unary call of the compatibility services run on `pool` (see FinishUnaryCall).
inline grpc::ServerUnaryReactor* PostUnaryCall(WorkerPool& pool, Metrics* metrics,
                                               grpc::CallbackServerContext* call,
                                               const char* method, std::function<Status()> work) {
  auto* reactor = call->DefaultReactor();
  if (metrics) metrics->AddInFlight(1);
  pool.Post([metrics, reactor, method, work = std::move(work)] {
    FinishUnaryCall(metrics, reactor, method, work);
  });
  return reactor;
}

}  // namespace lipsync::server
