// One scheduler for every caller of an avatar: a monolithic request, a lipsyncsrv request and a
// live session on one avatar, queued while the scheduler is paused, run in one batch that holds
// frames of all three; each is answered as it would be alone.
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <random>
#include <thread>

#include "lipsync/audio.h"
#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "lipsyncsrv_test_util.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using lipsync::v1::SessionRequest;
using lipsync::v1::SessionResponse;
using testing::ScratchDir;

constexpr int kFace = testing::kFace;

// Streams half a second of speech to a session on "anna" and counts the frames it gets.
grpc::Status RunSession(lipsync::v1::Sessions::Stub& stub, int* frames) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  auto stream = stub.Session(&context);
  SessionRequest request;
  request.mutable_start()->set_model_id("anna");
  request.mutable_start()->set_sample_format(lipsync::v1::SAMPLE_FORMAT_F32LE);
  request.mutable_start()->set_frame_format(lipsync::v1::FRAME_FORMAT_BGR);
  stream->Write(request);
  std::vector<float> pcm(kAudioSampleRate / 2);
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = 0.4f * std::sin(0.05f * static_cast<float>(i));
  request.Clear();
  request.set_audio(pcm.data(), pcm.size() * sizeof(float));
  stream->Write(request);
  request.Clear();
  request.mutable_end();
  stream->Write(request);
  stream->WritesDone();
  SessionResponse response;
  while (stream->Read(&response)) *frames += response.has_frame() ? 1 : 0;
  return stream->Finish();
}

TEST(SharedBatches, MonolithicLipSyncSrvAndSessionFramesShareABatch) {
  ScratchDir root;
  auto options = testing::AnnaOnEveryProtocol(root, 1);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  options->batching.preferred_batch = 1;
  auto server = testing::StartServer(*options);
  ASSERT_TRUE(server);
  AvatarRegistry& registry = *server->server->avatars();
  ASSERT_TRUE(registry.Load("anna").ok());
  runtime::Scheduler& scheduler = registry.scheduler();
  std::mutex mu;
  std::vector<runtime::BatchRecord> batches;
  scheduler.SetBatchObserver([&](const runtime::BatchRecord& r) {
    std::lock_guard lock(mu);
    batches.push_back(r);
  });
  scheduler.Pause();

  auto mono_stub = monolithic::MonolithicService::NewStub(server->channel);
  auto srv_stub = lipsyncsrv::LipSyncService::NewStub(server->channel);
  auto session_stub = lipsync::v1::Sessions::NewStub(server->channel);
  monolithic::CompositeBatchResponse mono;
  lipsyncsrv::InferenceResponse srv;
  int session_frames = 0;
  grpc::Status session_status;
  std::thread mono_call([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    EXPECT_TRUE(
        mono_stub->InferBatchComposite(&ctx, testing::MonolithicRequest(2, 11), &mono).ok());
  });
  std::thread srv_call([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
    lipsyncsrv::InferenceRequest request;
    request.set_model_name("anna");
    request.set_frame_id(1);
    EXPECT_TRUE(srv_stub->GenerateInference(&ctx, request, &srv).ok());
  });
  std::thread session_call([&] { session_status = RunSession(*session_stub, &session_frames); });
  // Every caller's frames wait in the paused scheduler before any runs.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  for (runtime::Origin o :
       {runtime::Origin::kMonolithic, runtime::Origin::kLipSyncSrv, runtime::Origin::kSession}) {
    while (scheduler.queued_rows(o) == 0 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_GT(scheduler.queued_rows(o), 0) << runtime::OriginName(o);
  }
  scheduler.Resume();
  mono_call.join();
  srv_call.join();
  session_call.join();

  EXPECT_TRUE(mono.success()) << mono.error();
  EXPECT_EQ(mono.composited_frames_size(), 2);
  EXPECT_TRUE(srv.success()) << srv.error();
  EXPECT_TRUE(session_status.ok()) << session_status.error_message();
  EXPECT_GT(session_frames, 0);
  std::lock_guard lock(mu);
  ASSERT_FALSE(batches.empty());
  const runtime::BatchRecord& first = batches.front();
  EXPECT_EQ(first.by_origin[static_cast<size_t>(runtime::Origin::kMonolithic)], 2);
  EXPECT_EQ(first.by_origin[static_cast<size_t>(runtime::Origin::kLipSyncSrv)], 1);
  EXPECT_GT(first.by_origin[static_cast<size_t>(runtime::Origin::kSession)], 0);
  EXPECT_EQ(first.live, first.by_origin[static_cast<size_t>(runtime::Origin::kSession)]);
  EXPECT_GE(scheduler.totals().mixed_batches, 1);
  const std::string metrics = server->server->metrics().RenderPrometheus();
  EXPECT_NE(metrics.find("lipsync_scheduler_frames_total{device=\"cpu\",origin=\"lipsyncsrv\"}"),
            std::string::npos);
}

}  // namespace
}  // namespace lipsync::server
