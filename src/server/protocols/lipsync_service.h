// lipsync.v1.LipSync over the gRPC callback API.
#pragma once

#include "lipsync/v1/lipsync.grpc.pb.h"
#include "server/protocols/service_context.h"

namespace lipsync::server {

class LipSyncService final : public lipsync::v1::LipSync::CallbackService {
 public:
  explicit LipSyncService(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* Infer(grpc::CallbackServerContext* call,
                                  const lipsync::v1::InferRequest* request,
                                  lipsync::v1::InferResponse* response) override;
  grpc::ServerBidiReactor<lipsync::v1::StreamInferRequest, lipsync::v1::StreamInferResponse>*
  StreamInfer(grpc::CallbackServerContext* call) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* call,
                                         const lipsync::v1::GetModelInfoRequest* request,
                                         lipsync::v1::ModelInfo* response) override;

 private:
  ServiceContext* ctx_;
};

}  // namespace lipsync::server
