#include "server/protocols/call_gate.h"

#include <cstring>

namespace lipsync::server {

// gRPC makes one interceptor per call and destroys it with the call's context, after the call's
// last operation: its life is the call's.
class CallCounterInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallCounterInterceptor(CallGate* gate, const char* method)
      : gate_(IsGrpcOwn(method) ? nullptr : gate) {
    if (gate_) gate_->Opened();
  }
  ~CallCounterInterceptor() override {
    if (gate_) gate_->Ended();
  }
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    methods->Proceed();
  }

 private:
  static bool IsGrpcOwn(const char* method) {
    return method && std::strncmp(method, "/grpc.", 6) == 0;
  }
  CallGate* gate_;
};

namespace {

class CallCounterFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallCounterFactory(CallGate* gate) : gate_(gate) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallCounterInterceptor(gate_, info->method());
  }

 private:
  CallGate* gate_;
};

}  // namespace

bool CallGate::WaitForOpenCalls(std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mu_);
  return idle_.wait_until(lock, deadline, [this] { return open_ == 0; });
}

std::chrono::steady_clock::time_point CallGate::last_ended() const {
  std::lock_guard lock(mu_);
  return last_ended_;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CallGate::CallCounter() {
  return std::make_unique<CallCounterFactory>(this);
}

void CallGate::Opened() {
  std::lock_guard lock(mu_);
  ++open_;
}

void CallGate::Ended() {
  std::lock_guard lock(mu_);
  last_ended_ = std::chrono::steady_clock::now();
  if (--open_ == 0) idle_.notify_all();
}

grpc::Status RefusedWhileDraining() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is shutting down and takes no new calls; call another instance");
}

grpc::ServerUnaryReactor* RefuseUnary(grpc::CallbackServerContext* call) {
  auto* reactor = call->DefaultReactor();
  reactor->Finish(RefusedWhileDraining());
  return reactor;
}

}  // namespace lipsync::server
