// The server's drain at the call level. Once the gate closes, every call of lipsync's services is
// refused as UNAVAILABLE (a client retries it on another instance) while the calls already open
// run to their end; the server waits for them, and for their answers to leave, before gRPC closes
// the connections. gRPC's own shutdown closes a connection the moment its last call is answered,
// and a close that meets bytes the client sent meanwhile resets the connection, which can take
// the answer's last bytes with it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace lipsync::server {

class CallGate {
 public:
  // Refuse new calls from now on.
  void Close() { closed_ = true; }
  bool closed() const { return closed_; }

  // Waits until no call is open or `deadline` passes; true when none is open. Calls of every
  // service count but gRPC's own (health and reflection, whose watches may stay open for as long
  // as the client likes).
  bool WaitForOpenCalls(std::chrono::steady_clock::time_point deadline) const;
  // When the last counted call ended (the clock's epoch if none has).
  std::chrono::steady_clock::time_point last_ended() const;

  // Counts the calls of a gRPC server into this gate; give one to each server's builder.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CallCounter();

 private:
  friend class CallCounterInterceptor;
  void Opened();
  void Ended();

  std::atomic<bool> closed_{false};
  mutable std::mutex mu_;
  mutable std::condition_variable idle_;
  int open_ = 0;
  std::chrono::steady_clock::time_point last_ended_{};
};

// The answer to a call that arrives once the gate is closed.
grpc::Status RefusedWhileDraining();

// A unary call refused while draining; returns the reactor the handler returns.
grpc::ServerUnaryReactor* RefuseUnary(grpc::CallbackServerContext* call);

// A bidirectional stream refused while draining: ends at once with RefusedWhileDraining().
template <typename Request, typename Response>
class RefusedStream final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  RefusedStream() { this->Finish(RefusedWhileDraining()); }
  void OnDone() override { delete this; }
};

}  // namespace lipsync::server
