// A name a megabyte long, in every protocol's request (and an audio override as long): each answer
// names the problem in a short message (never the megabyte back), and the server serves the next
// request.
#include <gtest/gtest.h>

#include <string>

#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "lipsyncsrv_test_util.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using testing::ScratchDir;

// Longer than any message may be, shorter than gRPC's default message limit (4 MiB).
const std::string kHugeName(size_t{1} << 20, 'n');
// Far above any message that names a problem, far below the name.
constexpr size_t kShort = 4096;

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return ctx;
}

// `message` is short and holds `part`.
void ExpectShort(const std::string& what, const std::string& message, const std::string& part) {
  EXPECT_LT(message.size(), kShort) << what << ": " << message.size() << " bytes";
  EXPECT_NE(message.find(part), std::string::npos) << what << ": " << message.substr(0, 300);
}

TEST(LongNames, EveryProtocolAnswersWithAShortMessageAndServesOn) {
  ScratchDir root;
  auto options = testing::AnnaOnEveryProtocol(root, 4);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  auto s = testing::StartServer(*options);
  ASSERT_TRUE(s);

  {  // lipsync.v1 Infer, the model's name and an input's name
    auto request = testing::MakeFrames(1, 1).request;
    request.set_model_name(kHugeName);
    lipsync::v1::InferResponse response;
    grpc::Status status = testing::CallInfer(*s, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    ExpectShort("v1 model_name", status.error_message(), "unknown model 'nnnn");
    request = testing::MakeTensors(1, 2).request;
    request.mutable_tensors()->mutable_inputs(0)->set_name(kHugeName);
    status = testing::CallInfer(*s, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    ExpectShort("v1 input name", status.error_message(), "(1048576 bytes)");
  }
  {  // KServe: metadata, readiness and inference
    auto& kserve = s->kserve;
    inference::ModelMetadataRequest meta;
    meta.set_name(kHugeName);
    inference::ModelMetadataResponse meta_response;
    grpc::Status status = kserve->ModelMetadata(Context().get(), meta, &meta_response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    ExpectShort("KServe ModelMetadata", status.error_message(), "unknown model 'nnnn");
    auto infer = testing::KServeRequest(testing::MakeTensors(1, 3));
    infer.set_model_name(kHugeName);
    inference::ModelInferResponse infer_response;
    status = kserve->ModelInfer(Context().get(), infer, &infer_response);
    EXPECT_FALSE(status.ok());
    ExpectShort("KServe ModelInfer", status.error_message(), "unknown model 'nnnn");
  }
  {  // the monolithic service: success=false with the error in the answer
    auto stub = monolithic::MonolithicService::NewStub(s->channel);
    auto request = testing::MonolithicRequest(2, 5);
    request.set_model_id(kHugeName);
    monolithic::CompositeBatchResponse response;
    ASSERT_TRUE(stub->InferBatchComposite(Context().get(), request, &response).ok());
    EXPECT_FALSE(response.success());
    ExpectShort("InferBatchComposite", response.error(), "model_id 'nnnn");
    monolithic::LoadModelRequest load;
    load.set_model_id(kHugeName);
    monolithic::LoadModelResponse load_response;
    ASSERT_TRUE(stub->LoadModel(Context().get(), load, &load_response).ok());
    EXPECT_FALSE(load_response.success());
    ExpectShort("LoadModel", load_response.error(), "longer than an avatar folder name");
  }
  {  // lipsyncsrv: the name and the audio override; a name that long is not echoed in model_name
    auto stub = lipsyncsrv::LipSyncService::NewStub(s->channel);
    lipsyncsrv::InferenceRequest request;
    request.set_model_name(kHugeName);
    request.set_frame_id(1);
    lipsyncsrv::InferenceResponse response;
    ASSERT_TRUE(stub->GenerateInference(Context().get(), request, &response).ok());
    EXPECT_FALSE(response.success());
    ExpectShort("GenerateInference", response.error(), "model_name 'nnnn");
    EXPECT_TRUE(response.model_name().empty()) << response.model_name().size() << " bytes";
    request.set_model_name("anna");
    request.set_audio_override(kHugeName + ".wav");
    ASSERT_TRUE(stub->GenerateInference(Context().get(), request, &response).ok());
    EXPECT_FALSE(response.success());
    ExpectShort("audio_override", response.error(), "audio_override (1048580 characters");
    lipsyncsrv::LoadModelRequest load;
    load.set_model_name(kHugeName);
    lipsyncsrv::LoadModelResponse load_response;
    ASSERT_TRUE(stub->LoadModel(Context().get(), load, &load_response).ok());
    EXPECT_FALSE(load_response.success());
    ExpectShort("lipsyncsrv LoadModel error", load_response.error(), "model_name 'nnnn");
    ExpectShort("lipsyncsrv LoadModel message", load_response.message(), "cannot load model");
    EXPECT_TRUE(load_response.model_name().empty());
  }
  {  // a live session's start
    auto stub = lipsync::v1::Sessions::NewStub(s->channel);
    auto ctx = Context();
    auto stream = stub->Session(ctx.get());
    lipsync::v1::SessionRequest start;
    start.mutable_start()->set_model_id(kHugeName);
    start.mutable_start()->set_sample_format(lipsync::v1::SAMPLE_FORMAT_F32LE);
    stream->Write(start);
    stream->WritesDone();
    lipsync::v1::SessionResponse response;
    while (stream->Read(&response)) {
    }
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    ExpectShort("session start", status.error_message(), "model_id 'nnnn");
  }
  // The server goes on: the same avatar service answers a good request.
  auto stub = monolithic::MonolithicService::NewStub(s->channel);
  monolithic::CompositeBatchResponse good;
  ASSERT_TRUE(
      stub->InferBatchComposite(Context().get(), testing::MonolithicRequest(2, 5), &good).ok());
  EXPECT_TRUE(good.success()) << good.error();
  EXPECT_EQ(good.composited_frames_size(), 2);
}

}  // namespace
}  // namespace lipsync::server
