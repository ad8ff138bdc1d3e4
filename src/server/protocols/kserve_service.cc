#include "server/protocols/kserve_service.h"

#include "server/protocols/repository_service.h"

namespace lipsync::server {
namespace {

// The one version this server has of its model (KServe models are versioned; ours are files).
constexpr char kModelVersion[] = "1";

const char* KServeDatatype(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return "FP32";
    case DataType::kFloat16:
      return "FP16";
    case DataType::kUInt8:
      return "UINT8";
    case DataType::kInt32:
      return "INT32";
    case DataType::kInt64:
      return "INT64";
  }
  return "BYTES";
}

void EncodeKServe(ServiceContext& ctx, const inference::ModelInferRequest& request,
                  const Ticket& ticket, inference::ModelInferResponse* response) {
  response->set_id(request.id());
  response->set_model_version(request.model_version());
  EncodeModelInferResponse(ctx.spec, ticket, response);
}

}  // namespace

grpc::ServerUnaryReactor* KServeService::Reply(grpc::CallbackServerContext* call,
                                               const char* method, const grpc::Status& status) {
  ctx_->metrics->RecordRequest(method, GrpcCodeName(status.error_code()));
  auto* reactor = call->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

grpc::ServerUnaryReactor* KServeService::ServerLive(grpc::CallbackServerContext* call,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  response->set_live(true);
  return Reply(call, "ServerLive", grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerReady(grpc::CallbackServerContext* call,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  response->set_ready(ctx_->ready.load());
  return Reply(call, "ServerReady", grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelReady(grpc::CallbackServerContext* call,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (request->name() != ctx_->spec.name) {
    return Reply(
        call, "ModelReady",
        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown model " + Quoted(request->name())));
  }
  response->set_ready(ctx_->ready.load());
  return Reply(call, "ModelReady", grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ServerMetadata(
    grpc::CallbackServerContext* call, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  response->set_name("lipsync");
  response->set_version(LIPSYNC_SERVER_VERSION);
  if (ctx_->avatars) response->add_extensions("model_repository");
  return Reply(call, "ServerMetadata", grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelMetadata(
    grpc::CallbackServerContext* call, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (request->name() != ctx_->spec.name) {
    return Reply(
        call, "ModelMetadata",
        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown model " + Quoted(request->name())));
  }
  const ModelInfo& info = ctx_->engine->info();
  response->set_name(ctx_->spec.name);
  response->add_versions(std::string(kModelVersion));
  response->set_platform("onnx_onnxv1");
  auto add = [](const TensorInfo& t, inference::ModelMetadataResponse::TensorMetadata* m) {
    m->set_name(t.name);
    m->set_datatype(KServeDatatype(t.dtype));
    for (int64_t d : t.shape) m->add_shape(d);
  };
  for (const auto& t : info.inputs) add(t, response->add_inputs());
  for (const auto& t : info.outputs) add(t, response->add_outputs());
  return Reply(call, "ModelMetadata", grpc::Status::OK);
}

grpc::ServerUnaryReactor* KServeService::ModelInfer(grpc::CallbackServerContext* call,
                                                    const inference::ModelInferRequest* request,
                                                    inference::ModelInferResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  return new UnaryInferCall<inference::ModelInferRequest, inference::ModelInferResponse>(
      ctx_, call, request, response, "ModelInfer", &DecodeModelInferRequest, &EncodeKServe,
      runtime::Origin::kKServe);
}

namespace {
const grpc::Status kNoRepository(grpc::StatusCode::UNIMPLEMENTED,
                                 "the model repository extension is served with avatars only");
}  // namespace

grpc::ServerUnaryReactor* KServeService::RepositoryIndex(
    grpc::CallbackServerContext* call, const inference::RepositoryIndexRequest* request,
    inference::RepositoryIndexResponse* response) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (!ctx_->avatars) return Reply(call, "RepositoryIndex", kNoRepository);
  return Reply(call, "RepositoryIndex",
               server::RepositoryIndex(*ctx_->avatars, *request, response));
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelLoad(
    grpc::CallbackServerContext* call, const inference::RepositoryModelLoadRequest* request,
    inference::RepositoryModelLoadResponse*) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (!ctx_->avatars) return Reply(call, "RepositoryModelLoad", kNoRepository);
  auto* reactor = call->DefaultReactor();
  ctx_->avatars->loader().Post([this, reactor, request] {
    grpc::Status status;
    const Status thrown = runtime::CatchAll("RepositoryModelLoad", [&] {
      status = server::RepositoryModelLoad(*ctx_->avatars, *request);
      return Status::Ok();
    });
    if (!thrown.ok()) status = ToGrpcStatus(thrown);
    ctx_->metrics->RecordRequest("RepositoryModelLoad", GrpcCodeName(status.error_code()));
    reactor->Finish(status);
  });
  return reactor;
}

grpc::ServerUnaryReactor* KServeService::RepositoryModelUnload(
    grpc::CallbackServerContext* call, const inference::RepositoryModelUnloadRequest* request,
    inference::RepositoryModelUnloadResponse*) {
  if (ctx_->gate->closed()) return RefuseUnary(call);
  if (!ctx_->avatars) return Reply(call, "RepositoryModelUnload", kNoRepository);
  return Reply(call, "RepositoryModelUnload",
               server::RepositoryModelUnload(*ctx_->avatars, *request));
}

}  // namespace lipsync::server
