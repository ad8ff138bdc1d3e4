// Every protocol's frames on the device's one scheduler: a lipsync.v1 request and a KServe request
// for the server's model share a batch, and lipsync_frames_total counts the frames of each
// protocol's request once (v1, KServe, the monolithic and lipsyncsrv services, live sessions).
#include <gtest/gtest.h>

#include <cmath>
#include <future>
#include <random>

#include "lipsync/audio.h"
#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "lipsyncsrv_test_util.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using testing::Frames;
using testing::ScratchDir;

constexpr int kFace = testing::kFace;

grpc::Status CallKServe(testing::TestServer& s, const inference::ModelInferRequest& request,
                        inference::ModelInferResponse* response) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return s.kserve->ModelInfer(&ctx, request, response);
}

// A value of the server's /metrics text: the number after `series ` (-1 when absent).
double MetricValue(const std::string& text, const std::string& series) {
  const std::string key = "\n" + series + " ";
  const size_t at = text.find(key);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + key.size()));
}

// One frame from lipsync.v1 and one from KServe wait for a batch of two (frames wait up to ten
// minutes for a full batch): they can only be answered by running together.
TEST(ProtocolBatches, V1AndKServeFramesShareABatch) {
  auto s = testing::StartServer(testing::Options(2, 600000000));
  ASSERT_TRUE(s);
  const Metrics& m = s->server->metrics();
  Frames v1 = testing::MakeFrames(1, 31);
  Frames kserve = testing::MakeTensors(1, 32);
  auto v1_call = std::async(std::launch::async, [&] {
    lipsync::v1::InferResponse r;
    return testing::CallInfer(*s, v1.request, &r, 120000);
  });
  ASSERT_TRUE(testing::WaitFor([&] { return m.queue_depth() == 1; }));
  inference::ModelInferResponse response;
  const grpc::Status kserve_status = CallKServe(*s, testing::KServeRequest(kserve), &response);
  ASSERT_TRUE(kserve_status.ok()) << kserve_status.error_message();
  ASSERT_TRUE(v1_call.get().ok());
  EXPECT_EQ(testing::MaxAbsDiff(response.raw_output_contents(0),
                                testing::EngineOutput(*s->engine, kserve.engine_inputs)),
            0.0);
  EXPECT_EQ(m.batches(), 1u);
  EXPECT_EQ(m.batches_of_size(2), 1u);
  EXPECT_EQ(m.model_frames("lipsync", "v1"), 1u);
  EXPECT_EQ(m.model_frames("lipsync", "kserve"), 1u);
  const runtime::SchedulerTotals totals = s->server->scheduler()->totals();
  EXPECT_EQ(totals.mixed_batches, 1);
  EXPECT_EQ(totals.rows_by_origin[static_cast<size_t>(runtime::Origin::kV1)], 1);
  EXPECT_EQ(totals.rows_by_origin[static_cast<size_t>(runtime::Origin::kKServe)], 1);
  EXPECT_NE(
      m.RenderPrometheus().find("lipsync_model_frames_total{model=\"lipsync\",origin=\"v1\"} 1"),
      std::string::npos);
}

// A second of speech to a session on "anna"; the frames it got.
int RunSession(lipsync::v1::Sessions::Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  auto stream = stub.Session(&context);
  lipsync::v1::SessionRequest request;
  request.mutable_start()->set_model_id("anna");
  request.mutable_start()->set_sample_format(lipsync::v1::SAMPLE_FORMAT_F32LE);
  request.mutable_start()->set_frame_format(lipsync::v1::FRAME_FORMAT_BGR);
  stream->Write(request);
  std::vector<float> pcm(kAudioSampleRate);
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = 0.4f * std::sin(0.05f * static_cast<float>(i));
  request.Clear();
  request.set_audio(pcm.data(), pcm.size() * sizeof(float));
  stream->Write(request);
  request.Clear();
  request.mutable_end();
  stream->Write(request);
  stream->WritesDone();
  lipsync::v1::SessionResponse response;
  int frames = 0;
  while (stream->Read(&response)) frames += response.has_frame() ? 1 : 0;
  EXPECT_TRUE(stream->Finish().ok());
  return frames;
}

// Each protocol's request adds its frames to lipsync_frames_total, once; the avatar services'
// requests are counted by method and by avatar, and the avatar's UNet time grows with a session's
// frames as with a request's.
TEST(ProtocolBatches, FramesTotalCountsEveryProtocolOnce) {
  ScratchDir root;
  auto options = testing::AnnaOnEveryProtocol(root, 4);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  auto s = testing::StartServer(*options);
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->server->avatars()->Load("anna").ok());
  const Metrics& m = s->server->metrics();
  const auto frames_total = [&] {
    return MetricValue(m.RenderPrometheus(), "lipsync_frames_total");
  };
  const auto anna = [&](const char* family) {
    return MetricValue(m.RenderPrometheus(), std::string(family) + "{avatar=\"anna\"}");
  };
  ASSERT_EQ(frames_total(), 0);

  // A live session first: the avatar's UNet time is its alone.
  const int session_frames = RunSession(*lipsync::v1::Sessions::NewStub(s->channel));
  ASSERT_GT(session_frames, 0);
  EXPECT_EQ(frames_total(), session_frames);
  EXPECT_GT(anna("lipsync_avatar_inference_seconds_total"), 0);
  double total = session_frames;

  lipsync::v1::InferResponse v1;
  ASSERT_TRUE(testing::CallInfer(*s, testing::MakeFrames(3, 1).request, &v1, 120000).ok());
  EXPECT_EQ(frames_total(), total += 3) << "v1";

  inference::ModelInferResponse kserve;
  ASSERT_TRUE(CallKServe(*s, testing::KServeRequest(testing::MakeTensors(2, 2)), &kserve).ok());
  EXPECT_EQ(frames_total(), total += 2) << "KServe";

  {
    grpc::ClientContext ctx;
    auto stream = s->stub->StreamInfer(&ctx);
    lipsync::v1::StreamInferRequest request;
    *request.mutable_request() = testing::MakeFrames(1, 3).request;
    ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    lipsync::v1::StreamInferResponse response;
    ASSERT_TRUE(stream->Read(&response));
    EXPECT_TRUE(stream->Finish().ok());
  }
  EXPECT_EQ(frames_total(), total += 1) << "StreamInfer";

  monolithic::CompositeBatchResponse mono;
  {
    grpc::ClientContext ctx;
    auto stub = monolithic::MonolithicService::NewStub(s->channel);
    ASSERT_TRUE(stub->InferBatchComposite(&ctx, testing::MonolithicRequest(2, 5), &mono).ok());
  }
  ASSERT_TRUE(mono.success()) << mono.error();
  EXPECT_EQ(frames_total(), total += 2) << "monolithic";

  lipsyncsrv::InferenceResponse srv;
  {
    grpc::ClientContext ctx;
    lipsyncsrv::InferenceRequest request;
    request.set_model_name("anna");
    request.set_frame_id(1);
    auto stub = lipsyncsrv::LipSyncService::NewStub(s->channel);
    ASSERT_TRUE(stub->GenerateInference(&ctx, request, &srv).ok());
  }
  ASSERT_TRUE(srv.success()) << srv.error();
  EXPECT_EQ(frames_total(), total += 1) << "lipsyncsrv";

  EXPECT_EQ(m.model_frames("anna", "session"), static_cast<uint64_t>(session_frames));
  EXPECT_EQ(m.model_frames("anna", "monolithic"), 2u);
  EXPECT_EQ(m.model_frames("anna", "lipsyncsrv"), 1u);
  EXPECT_EQ(m.model_frames("lipsync", "v1"), 4u);
  EXPECT_EQ(m.model_frames("lipsync", "kserve"), 2u);
  EXPECT_EQ(m.requests("GenerateInference", "OK"), 1u);
  EXPECT_EQ(m.requests("InferBatchComposite", "OK"), 1u);
  // The session and both avatar services' requests count for the avatar.
  EXPECT_EQ(anna("lipsync_avatar_requests_total"), 3);
}

}  // namespace
}  // namespace lipsync::server
