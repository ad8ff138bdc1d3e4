// The KServe v2 / Open Inference Protocol service (inference.GRPCInferenceService).
#pragma once

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/core/worker_pool.h"
#include "server/protocols/service_context.h"

namespace lipsync::server {

class KServeService final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit KServeService(ServiceContext* ctx) : ctx_(ctx) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* call,
                                       const inference::ServerLiveRequest*,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* call,
                                        const inference::ServerReadyRequest*,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* call,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* call,
                                           const inference::ServerMetadataRequest*,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* call,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* call,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;
  // The model repository extension, over ctx->avatars (UNIMPLEMENTED without avatars).
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* call,
                                            const inference::RepositoryIndexRequest* request,
                                            inference::RepositoryIndexResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(
      grpc::CallbackServerContext* call, const inference::RepositoryModelLoadRequest* request,
      inference::RepositoryModelLoadResponse* response) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(
      grpc::CallbackServerContext* call, const inference::RepositoryModelUnloadRequest* request,
      inference::RepositoryModelUnloadResponse* response) override;

 private:
  grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* call, const char* method,
                                  const grpc::Status& status);
  // Avatar loads take seconds: they run on the repository's loader thread, not gRPC's.
  ServiceContext* ctx_;
};

}  // namespace lipsync::server
