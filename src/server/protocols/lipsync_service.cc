#include "server/protocols/lipsync_service.h"

#include <spdlog/spdlog.h>

#include <deque>
#include <mutex>

namespace lipsync::server {
namespace {

using lipsync::v1::InferRequest;
using lipsync::v1::InferResponse;
using lipsync::v1::StreamInferRequest;
using lipsync::v1::StreamInferResponse;

// Most requests one stream may have waiting for their turn to be written; more are refused with
// RESOURCE_EXHAUSTED so that one fast sender cannot take all the memory.
constexpr size_t kMaxPendingPerStream = 64;

void EncodeLipSync(ServiceContext& ctx, const InferRequest& request, const Ticket& ticket,
                   InferResponse* response) {
  response->set_request_id(request.request_id());
  EncodeInferResponse(ctx.spec, ticket, request.output_form(), response);
}

// One bidirectional stream. Requests are decoded and submitted as they arrive; responses are kept
// in arrival order and written one at a time, each as soon as it and all before it are done.
class StreamCall final : public grpc::ServerBidiReactor<StreamInferRequest, StreamInferResponse> {
 public:
  StreamCall(ServiceContext* ctx, grpc::CallbackServerContext* call) : ctx_(ctx), call_(call) {
    ctx_->metrics->AddInFlight(1);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed, or the stream broke
      std::lock_guard lock(mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    auto slot = std::make_shared<Slot>();
    slot->response.set_sequence(request_.sequence());
    // Keep the request: the completion encodes from it after the next read reuses request_.
    slot->request = std::move(*request_.mutable_request());
    {
      std::lock_guard lock(mu_);
      pending_.push_back(slot);
      if (pending_.size() > kMaxPendingPerStream) {
        FailSlotLocked(*slot,
                       ResourceExhausted("more than " + std::to_string(kMaxPendingPerStream) +
                                         " requests pending on this stream"));
      }
    }
    if (!slot->done) Submit(slot);
    request_.Clear();
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    pending_.pop_front();
    if (!ok) broken_ = true;  // the client is gone: finish once the rest is accounted for
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void OnCancel() override {
    std::lock_guard lock(mu_);
    broken_ = true;
    for (auto& slot : pending_) {
      if (slot->ticket) slot->ticket->Cancel();
    }
  }

  void OnDone() override {
    ctx_->metrics->AddInFlight(-1);
    delete this;
  }

 private:
  struct Slot {
    InferRequest request;
    StreamInferResponse response;
    std::shared_ptr<Ticket> ticket;
    bool done = false;
  };

  void Submit(const std::shared_ptr<Slot>& slot) {
    auto items = DecodeInferRequest(ctx_->spec, slot->request);
    if (!items.ok()) {
      std::lock_guard lock(mu_);
      FailSlotLocked(*slot, items.status());
      return;
    }
    slot->ticket =
        std::make_shared<Ticket>(items->size(), SteadyDeadline(call_), [this, slot](Ticket& t) {
          std::lock_guard lock(mu_);
          if (!t.status().ok()) return FailSlotLocked(*slot, t.status());
          EncodeLipSync(*ctx_, slot->request, t, slot->response.mutable_response());
          CompleteSlotLocked(*slot, "OK");
        });
    Status submitted = ctx_->batcher->Submit(slot->ticket, std::move(*items), runtime::Origin::kV1);
    if (!submitted.ok()) {
      std::lock_guard lock(mu_);
      FailSlotLocked(*slot, submitted);
    }
  }

  void FailSlotLocked(Slot& slot, const Status& status) {
    const grpc::Status g = ToGrpcStatus(status);
    slot.response.set_code(g.error_code());
    slot.response.set_message(g.error_message());
    slot.response.clear_response();
    CompleteSlotLocked(slot, GrpcCodeName(g.error_code()));
  }

  void CompleteSlotLocked(Slot& slot, const char* code) {
    ctx_->metrics->RecordRequest("StreamInfer", code);
    slot.done = true;
    WriteNextLocked();
    MaybeFinishLocked();
  }

  void WriteNextLocked() {
    if (writing_ || pending_.empty() || !pending_.front()->done) return;
    if (broken_) {  // nobody to write to: drop finished responses in order
      while (!pending_.empty() && pending_.front()->done) pending_.pop_front();
      return;
    }
    writing_ = true;
    StartWrite(&pending_.front()->response);
  }

  void MaybeFinishLocked() {
    if (finished_ || writing_ || !pending_.empty()) return;
    if (!reads_done_) return;
    finished_ = true;
    Finish(broken_ ? grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled")
                   : grpc::Status::OK);
  }

  ServiceContext* ctx_;
  grpc::CallbackServerContext* call_;
  StreamInferRequest request_;
  std::mutex mu_;
  std::deque<std::shared_ptr<Slot>> pending_;
  bool writing_ = false;
  bool reads_done_ = false;
  bool broken_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerUnaryReactor* LipSyncService::Infer(grpc::CallbackServerContext* call,
                                                const InferRequest* request,
                                                InferResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (!request->request_id().empty()) {
    spdlog::debug("Infer request_id={} peer={}", request->request_id(), call->peer());
  }
  return new UnaryInferCall<InferRequest, InferResponse>(ctx_, call, request, response, "Infer",
                                                         &DecodeInferRequest, &EncodeLipSync,
                                                         runtime::Origin::kV1);
}

grpc::ServerBidiReactor<StreamInferRequest, StreamInferResponse>* LipSyncService::StreamInfer(
    grpc::CallbackServerContext* call) {
  if (ctx_->gate->closed()) return new RefusedStream<StreamInferRequest, StreamInferResponse>();
  return new StreamCall(ctx_, call);
}

grpc::ServerUnaryReactor* LipSyncService::GetModelInfo(grpc::CallbackServerContext* call,
                                                       const lipsync::v1::GetModelInfoRequest*,
                                                       lipsync::v1::ModelInfo* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  const ModelInfo& info = ctx_->engine->info();
  response->set_model_name(ctx_->spec.name);
  auto add = [](const TensorInfo& t, lipsync::v1::TensorSpec* spec) {
    spec->set_name(t.name);
    spec->set_dtype(t.dtype == DataType::kFloat16 ? lipsync::v1::FLOAT16
                    : t.dtype == DataType::kUInt8 ? lipsync::v1::UINT8
                                                  : lipsync::v1::FLOAT32);
    for (int64_t d : t.shape) spec->add_shape(d);
  };
  for (const auto& t : info.inputs) add(t, response->add_inputs());
  for (const auto& t : info.outputs) add(t, response->add_outputs());
  response->set_backend(info.backend);
  response->set_provider(info.provider);
  response->set_frame_size(ctx_->spec.frame_form ? ctx_->spec.layout.inner_size : 0);
  response->set_max_batch(ctx_->batcher->options().max_batch);
  response->set_preferred_batch(ctx_->batcher->batch_limit());
  response->set_max_queue_delay_us(ctx_->max_queue_delay_us);
  response->set_max_queue(ctx_->max_queue);
  ctx_->metrics->RecordRequest("GetModelInfo", "OK");
  auto* reactor = call->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace lipsync::server
