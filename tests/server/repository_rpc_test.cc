// The KServe v2 model repository extension over loopback gRPC, driving the same avatar repository
// as the monolithic service: index, load, unload, their errors, and unloads while requests run.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "avatar_test_util.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"
#include "test_avatars.h"

namespace lipsync::server {
namespace {

using lipsync::testing::ScratchDir;
using lipsync::testing::WriteFile;

struct Fixture {
  ScratchDir dir;
  std::unique_ptr<testing::TestServer> server;
  std::unique_ptr<monolithic::MonolithicService::Stub> monolithic;
};

std::unique_ptr<Fixture> Start() {
  auto f = std::make_unique<Fixture>();
  testing::WriteTestAvatar(f->dir / "avatars", "anna");
  testing::WriteTestAvatar(f->dir / "avatars", "bob");
  WriteFile(f->dir / "avatars/broken/avatar.json", "{");
  WriteFile(f->dir / "avatars.yaml", "avatars_root: avatars\nmax_models: 1\n");
  ServerOptions options = testing::Options(1, 0);
  options.batching.preferred_batch = 1;
  options.monolithic = true;
  options.monolithic_options.avatars.root = f->dir / "avatars.yaml";
  options.monolithic_options.avatars.engine.intra_op_threads = 1;
  f->server = testing::StartServer(options);
  if (!f->server) return nullptr;
  f->monolithic = monolithic::MonolithicService::NewStub(f->server->channel);
  return f;
}

inference::RepositoryIndexResponse Index(Fixture& f, bool ready = false) {
  grpc::ClientContext ctx;
  inference::RepositoryIndexRequest request;
  request.set_ready(ready);
  inference::RepositoryIndexResponse response;
  EXPECT_TRUE(f.server->kserve->RepositoryIndex(&ctx, request, &response).ok());
  return response;
}

grpc::Status Load(Fixture& f, const std::string& name) {
  grpc::ClientContext ctx;
  inference::RepositoryModelLoadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelLoadResponse response;
  return f.server->kserve->RepositoryModelLoad(&ctx, request, &response);
}

grpc::Status Unload(Fixture& f, const std::string& name) {
  grpc::ClientContext ctx;
  inference::RepositoryModelUnloadRequest request;
  request.set_model_name(name);
  inference::RepositoryModelUnloadResponse response;
  return f.server->kserve->RepositoryModelUnload(&ctx, request, &response);
}

std::string StateOf(const inference::RepositoryIndexResponse& index, const std::string& name) {
  for (const auto& m : index.models()) {
    if (m.name() == name) return m.state() + "|" + m.reason();
  }
  return "absent";
}

TEST(RepositoryRpc, IndexLoadUnload) {
  auto f = Start();
  ASSERT_TRUE(f);
  auto index = Index(*f);
  ASSERT_EQ(index.models_size(), 3);
  EXPECT_EQ(index.models(0).name(), "anna");
  EXPECT_EQ(StateOf(index, "anna"), "|");  // never loaded
  EXPECT_EQ(Index(*f, true).models_size(), 0);

  ASSERT_TRUE(Load(*f, "anna").ok());
  index = Index(*f);
  EXPECT_EQ(StateOf(index, "anna"), "READY|");
  EXPECT_EQ(index.models(0).version(), "1");
  ASSERT_EQ(Index(*f, true).models_size(), 1);

  // The cap is one: loading bob evicts anna.
  ASSERT_TRUE(Load(*f, "bob").ok());
  index = Index(*f);
  EXPECT_EQ(StateOf(index, "anna"), "UNAVAILABLE|evicted");
  EXPECT_EQ(StateOf(index, "bob"), "READY|");

  ASSERT_TRUE(Unload(*f, "bob").ok());
  EXPECT_EQ(StateOf(Index(*f), "bob"), "UNAVAILABLE|unloaded");
  EXPECT_TRUE(Unload(*f, "bob").ok());  // known and not loaded: nothing to do

  auto unknown = Load(*f, "carol");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(unknown.error_message().find("unknown model 'carol'"), std::string::npos);
  EXPECT_EQ(Unload(*f, "carol").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Load(*f, "../x").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto broken = Load(*f, "broken");
  EXPECT_FALSE(broken.ok());
  EXPECT_NE(broken.error_message().find("avatar.json"), std::string::npos)
      << broken.error_message();
  EXPECT_NE(StateOf(Index(*f), "broken").find("UNAVAILABLE|"), std::string::npos);
  // The server keeps serving after every error.
  ASSERT_TRUE(Load(*f, "anna").ok());

  // The monolithic service sees the same repository.
  grpc::ClientContext ctx;
  monolithic::HealthResponse health;
  ASSERT_TRUE(f->monolithic->Health(&ctx, {}, &health).ok());
  EXPECT_EQ(health.loaded_models(), 1);
  EXPECT_EQ(health.max_models(), 1);

  grpc::ClientContext meta_ctx;
  inference::ServerMetadataResponse meta;
  ASSERT_TRUE(f->server->kserve->ServerMetadata(&meta_ctx, {}, &meta).ok());
  ASSERT_EQ(meta.extensions_size(), 1);
  EXPECT_EQ(meta.extensions(0), "model_repository");

  const std::string metrics = f->server->server->metrics().RenderPrometheus();
  EXPECT_NE(metrics.find("lipsync_avatar_loads_total{avatar=\"anna\"} 2\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("lipsync_avatar_evictions_total{avatar=\"anna\"} 1\n"), std::string::npos);
  EXPECT_NE(metrics.find("lipsync_avatar_load_failures_total{avatar=\"broken\"} 1\n"),
            std::string::npos);
}

// Monolithic requests run while a client unloads and loads over the repository rpcs: every
// request succeeds (a request holds its avatar; the next one loads it again) and the counts agree.
TEST(RepositoryRpc, UnloadsWhileRequestsRun) {
  auto f = Start();
  ASSERT_TRUE(f);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  auto client = [&] {
    std::vector<float> visual(6 * 320 * 320, 0.5f), pcm(16 * 640, 0.f);
    monolithic::CompositeBatchRequest r;
    r.set_model_id("anna");
    r.set_visual_frames(visual.data(), visual.size() * sizeof(float));
    r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
    r.set_batch_size(1);
    r.set_sample_rate(16000);
    for (int i = 0; i < 6; ++i) {
      grpc::ClientContext ctx;
      monolithic::CompositeBatchResponse response;
      const bool good = f->monolithic->InferBatchComposite(&ctx, r, &response).ok() &&
                        response.success() && response.composited_frames_size() == 1;
      if (!good) ADD_FAILURE() << response.error();
      (good ? ok : failed)++;
    }
  };
  std::thread admin([&] {
    while (!stop) {
      EXPECT_TRUE(Unload(*f, "anna").ok());
      EXPECT_TRUE(Load(*f, "anna").ok());
    }
  });
  std::thread c1(client), c2(client);
  c1.join();
  c2.join();
  stop = true;
  admin.join();
  EXPECT_EQ(ok.load(), 12);
  EXPECT_EQ(failed.load(), 0);
  const auto states = f->server->server->avatars()->States();
  for (const AvatarState& s : states) {
    EXPECT_EQ(s.pins, 0);
    EXPECT_EQ(s.loads - s.unloads - s.evictions, s.loaded ? 1 : 0) << s.id;
  }
  EXPECT_EQ(testing::StateOf(states, "anna").total_requests, 12);
}

TEST(RepositoryRpc, UnimplementedWithoutAvatars) {
  auto server = testing::StartServer(testing::Options(1, 0));
  ASSERT_TRUE(server);
  grpc::ClientContext ctx;
  inference::RepositoryIndexResponse response;
  EXPECT_EQ(server->kserve->RepositoryIndex(&ctx, {}, &response).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace lipsync::server
