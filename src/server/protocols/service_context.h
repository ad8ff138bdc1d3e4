// What the gRPC services share: the model spec, the batcher, metrics and readiness.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <string>

#include "server/core/avatar_registry.h"
#include "server/core/batcher.h"
#include "server/core/metrics.h"
#include "server/core/worker_pool.h"  // SteadyDeadline
#include "server/protocols/call_gate.h"
#include "server/protocols/request_codec.h"

namespace lipsync::server {

struct ServiceContext {
  const Engine* engine = nullptr;
  ModelSpec spec;
  Batcher* batcher = nullptr;
  Metrics* metrics = nullptr;
  std::atomic<bool> ready{false};
  int64_t max_queue_delay_us = 0;
  int64_t max_queue = 0;
  AvatarRegistry* avatars = nullptr;  // the avatar repository, when the server has avatars
  const CallGate* gate = nullptr;     // closed while the server drains
};

// A unary inference call: decodes, submits to the batcher, answers from the ticket's completion.
// Owns itself: deleted by gRPC's OnDone after Finish.
template <typename Request, typename Response>
class UnaryInferCall : public grpc::ServerUnaryReactor {
 public:
  using Decode = Result<std::vector<BatchItem>> (*)(const ModelSpec&, const Request&);
  using Encode = void (*)(ServiceContext&, const Request&, const Ticket&, Response*);

  UnaryInferCall(ServiceContext* ctx, grpc::CallbackServerContext* call, const Request* request,
                 Response* response, const char* method, Decode decode, Encode encode,
                 runtime::Origin origin)
      : ctx_(ctx), method_(method) {
    ctx_->metrics->AddInFlight(1);
    auto items = decode(ctx_->spec, *request);
    if (!items.ok()) {
      Done(ToGrpcStatus(items.status()));
      return;
    }
    const size_t frames = items->size();
    ticket_ = std::make_shared<Ticket>(frames, SteadyDeadline(call),
                                       [this, request, response, encode](Ticket& t) {
                                         if (!t.status().ok())
                                           return Done(ToGrpcStatus(t.status()));
                                         encode(*ctx_, *request, t, response);
                                         Done(grpc::Status::OK);
                                       });
    Status submitted = ctx_->batcher->Submit(ticket_, std::move(*items), origin);
    if (!submitted.ok()) Done(ToGrpcStatus(submitted));
  }

  void OnCancel() override {
    if (ticket_) ticket_->Cancel();
  }
  void OnDone() override { delete this; }

 private:
  void Done(const grpc::Status& status) {
    ctx_->metrics->RecordRequest(method_, GrpcCodeName(status.error_code()));
    ctx_->metrics->AddInFlight(-1);
    Finish(status);
  }

  ServiceContext* ctx_;
  const char* method_;
  std::shared_ptr<Ticket> ticket_;
};

}  // namespace lipsync::server
