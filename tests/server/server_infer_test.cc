// Server results against the engine's, through every API and both input forms.
#include <gtest/gtest.h>

#include <cstring>

#include "lipsync/face.h"
#include "server_test_util.h"

namespace lipsync::server::testing {
namespace {

// With one request of N frames alone in the server and max batch N, the server runs exactly the
// batch the engine runs, so the results must be identical to the bit.
TEST(ServerInfer, FrameFormEqualsEngineBitForBit) {
  auto s = StartServer(Options(3, 100));
  ASSERT_TRUE(s);
  Frames f = MakeFrames(3, 1);
  lipsync::v1::InferResponse response;
  auto status = CallInfer(*s, f.request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const Tensor expected = EngineOutput(*s->engine, f.engine_inputs);
  EXPECT_EQ(response.output().name(), "output");
  EXPECT_EQ(
      std::vector<int64_t>(response.output().shape().begin(), response.output().shape().end()),
      expected.shape());
  EXPECT_EQ(MaxAbsDiff(response.output().data(), expected), 0.0);
  EXPECT_GT(response.compute_ms(), 0.0);
}

TEST(ServerInfer, TensorFormEqualsEngineBitForBit) {
  auto s = StartServer(Options(2, 100));
  ASSERT_TRUE(s);
  Frames f = MakeTensors(2, 2);
  lipsync::v1::InferResponse response;
  ASSERT_TRUE(CallInfer(*s, f.request, &response).ok());
  EXPECT_EQ(MaxAbsDiff(response.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 0.0);
}

TEST(ServerInfer, Float16TensorsAreWidened) {
  auto s = StartServer(Options(1, 100));
  ASSERT_TRUE(s);
  Frames f = MakeTensors(1, 3);
  for (int i = 0; i < 2; ++i) {  // round the inputs to half and send them as half
    Tensor& t = f.engine_inputs[i];
    std::string half(static_cast<size_t>(t.element_count()) * 2, '\0');
    for (int64_t k = 0; k < t.element_count(); ++k) {
      const uint16_t h = FloatToHalf(t.data_as<float>()[k]);
      t.data_as<float>()[k] = HalfToFloat(h);
      std::memcpy(&half[k * 2], &h, 2);
    }
    auto* w = f.request.mutable_tensors()->mutable_inputs(i);
    w->set_dtype(lipsync::v1::FLOAT16);
    w->set_data(half);
  }
  lipsync::v1::InferResponse response;
  auto status = CallInfer(*s, f.request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(MaxAbsDiff(response.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 0.0);
}

TEST(ServerInfer, ImageOutputIsTheEngineOutputAsBytes) {
  auto s = StartServer(Options(2, 100));
  ASSERT_TRUE(s);
  Frames f = MakeFrames(2, 4);
  f.request.set_output_form(lipsync::v1::OUTPUT_IMAGE);
  lipsync::v1::InferResponse response;
  ASSERT_TRUE(CallInfer(*s, f.request, &response).ok());
  ASSERT_EQ(response.images_size(), 2);
  const Tensor expected = EngineOutput(*s->engine, f.engine_inputs);
  for (int i = 0; i < 2; ++i) {
    std::vector<uint8_t> want(320 * 320 * 3);
    OutputToImage(expected.data_as<float>() + i * 3 * 320 * 320, 320, want.data());
    EXPECT_EQ(response.images(i), std::string(want.begin(), want.end())) << "frame " << i;
  }
}

TEST(ServerInfer, StreamAnswersInOrderWithTheEngineResults) {
  auto s = StartServer(Options(1, 100));
  ASSERT_TRUE(s);
  grpc::ClientContext ctx;
  auto stream = s->stub->StreamInfer(&ctx);
  std::vector<Frames> sent;
  for (int i = 0; i < 6; ++i) {
    sent.push_back(MakeFrames(1, 100 + i));
    lipsync::v1::StreamInferRequest message;
    message.set_sequence(1000 + i);
    *message.mutable_request() = sent.back().request;
    ASSERT_TRUE(stream->Write(message));
  }
  stream->WritesDone();
  lipsync::v1::StreamInferResponse response;
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(stream->Read(&response)) << i;
    EXPECT_EQ(response.sequence(), 1000u + i);
    EXPECT_EQ(response.code(), 0) << response.message();
    EXPECT_EQ(MaxAbsDiff(response.response().output().data(),
                         EngineOutput(*s->engine, sent[i].engine_inputs)),
              0.0);
  }
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST(ServerInfer, KServeModelInferEqualsEngine) {
  auto s = StartServer(Options(2, 100));
  ASSERT_TRUE(s);
  Frames f = MakeTensors(2, 5);
  inference::ModelInferRequest request = KServeRequest(f);
  request.set_id("req-7");
  grpc::ClientContext ctx;
  inference::ModelInferResponse response;
  auto status = s->kserve->ModelInfer(&ctx, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.id(), "req-7");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_EQ(MaxAbsDiff(response.raw_output_contents(0), EngineOutput(*s->engine, f.engine_inputs)),
            0.0);
}

TEST(ServerInfer, KServeMetadataAndHealth) {
  auto s = StartServer(Options(4, 100));
  ASSERT_TRUE(s);
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(s->kserve->ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name("lipsync");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(s->kserve->ModelMetadata(&ctx, req, &r).ok());
    ASSERT_EQ(r.inputs_size(), 2);
    EXPECT_EQ(r.inputs(0).name(), "visual_input");
    EXPECT_EQ(r.inputs(0).datatype(), "FP32");
    EXPECT_EQ(r.inputs(0).shape(0), -1);
    EXPECT_EQ(r.inputs(0).shape(1), 6);
  }
  {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name("someone-else");
    inference::ModelReadyResponse r;
    EXPECT_EQ(s->kserve->ModelReady(&ctx, req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    lipsync::v1::ModelInfo info;
    ASSERT_TRUE(s->stub->GetModelInfo(&ctx, {}, &info).ok());
    EXPECT_EQ(info.frame_size(), 320);
    EXPECT_EQ(info.max_batch(), 4);
    EXPECT_EQ(info.preferred_batch(), 4);  // none set: the max batch
  }
}

TEST(ServerInfer, SmallerModelTakesSmallerFrames) {
  auto s = StartServer(Options(2, 100), "tiny160.onnx");
  ASSERT_TRUE(s);
  Frames f = MakeFrames(2, 9, 160);
  lipsync::v1::InferResponse response;
  auto status = CallInfer(*s, f.request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(MaxAbsDiff(response.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 0.0);
}

}  // namespace
}  // namespace lipsync::server::testing
