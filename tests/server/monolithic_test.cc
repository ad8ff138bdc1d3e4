// monolithic.MonolithicService over loopback: every RPC with a C++ client, the byte layouts, the
// batch limits, frame wrap-around, each error as success=false, and the served frames against the
// engine and paste run directly on the same inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "avatar_test_util.h"
#include "lipsync/audio.h"
#include "lipsync/avatar.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"
#include "test_avatars.h"

namespace lipsync::server {
namespace {

using lipsync::testing::ScratchDir;
using lipsync::testing::WriteFile;

constexpr int kFrames = 5;
constexpr int kW = 192, kH = 128;
constexpr int kFace = 320;

CropRect RectOf(int i) { return testing::TestAvatarRect(i); }
using testing::WriteTestAvatar;

struct Fixture {
  ScratchDir root;
  std::unique_ptr<testing::TestServer> server;
  std::unique_ptr<monolithic::MonolithicService::Stub> stub;
};

// The monolithic service over the avatars under `root`, on its own port when `own_listen` is set.
ServerOptions MonolithicServerOptions(
    const std::string& root, const std::string& own_listen,
    stream::FrameStorage frames = stream::FrameStorage::kDecoded) {
  ServerOptions options = testing::Options(1, 0);
  options.batching.preferred_batch = 1;
  options.monolithic = true;
  options.monolithic_listen = own_listen;
  options.monolithic_options.avatars = testing::TestRegistryOptions(root);
  options.monolithic_options.avatars.frames = frames;
  options.monolithic_options.avatars.engine.max_batch = 16;  // batch 32 runs as two
  return options;
}

std::unique_ptr<Fixture> Start(const std::string& own_listen = "",
                               stream::FrameStorage frames = stream::FrameStorage::kDecoded) {
  auto f = std::make_unique<Fixture>();
  WriteTestAvatar(f->root.path(), "anna");
  f->server = testing::StartServer(MonolithicServerOptions(f->root.path(), own_listen, frames));
  if (!f->server) return nullptr;
  auto channel = f->server->channel;
  if (!own_listen.empty()) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(256 << 20);
    args.SetMaxSendMessageSize(256 << 20);
    channel = grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(f->server->server->monolithic_port()),
        grpc::InsecureChannelCredentials(), args);
  }
  f->stub = monolithic::MonolithicService::NewStub(channel);
  return f;
}

// A request with seeded random faces in [0, 1] and a seeded tone plus noise as audio.
monolithic::CompositeBatchRequest MakeRequest(int batch, int start, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> visual(static_cast<size_t>(batch) * 6 * kFace * kFace);
  for (auto& v : visual) v = u(rng);
  std::vector<float> pcm(static_cast<size_t>(batch + 15) * 640);
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] =
        0.3f * std::sin(0.05f * static_cast<float>(i) * (1 + seed % 5)) + 0.1f * (u(rng) - 0.5f);
  }
  monolithic::CompositeBatchRequest r;
  r.set_model_id("anna");
  r.set_visual_frames(visual.data(), visual.size() * sizeof(float));
  r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
  r.set_batch_size(batch);
  r.set_start_frame_idx(start);
  r.set_sample_rate(16000);
  return r;
}

monolithic::CompositeBatchResponse Call(Fixture& f, const monolithic::CompositeBatchRequest& r) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  monolithic::CompositeBatchResponse response;
  grpc::Status status = f.stub->InferBatchComposite(&ctx, r, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();  // errors too come back as OK
  return response;
}

cv::Mat Decode(const std::string& jpeg) {
  return cv::imdecode(
      cv::Mat(1, static_cast<int>(jpeg.size()), CV_8UC1, const_cast<char*>(jpeg.data())),
      cv::IMREAD_COLOR);
}

cv::Mat AsMat(const Image& image) {
  return cv::Mat(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.bgr.data()))
      .clone();
}

cv::Mat JpegRoundTrip(const cv::Mat& bgr) {
  std::vector<uint8_t> buffer;
  EXPECT_TRUE(cv::imencode(".jpg", bgr, buffer, {cv::IMWRITE_JPEG_QUALITY, 75}));
  return cv::imdecode(buffer, cv::IMREAD_COLOR);
}

// Largest channel difference between two images over the pixels where `where(x, y)` holds.
template <typename Where>
int MaxDiff(const cv::Mat& a, const cv::Mat& b, Where where) {
  int worst = 0;
  for (int y = 0; y < a.rows; ++y)
    for (int x = 0; x < a.cols; ++x)
      if (where(x, y))
        for (int c = 0; c < 3; ++c)
          worst = std::max(worst, std::abs(a.at<cv::Vec3b>(y, x)[c] - b.at<cv::Vec3b>(y, x)[c]));
  return worst;
}

double MeanDiffInside(const cv::Mat& a, const cv::Mat& b, const CropRect& r) {
  return cv::mean(cv::abs(a(cv::Rect(r.x1, r.y1, r.width(), r.height())) -
                          b(cv::Rect(r.x1, r.y1, r.width(), r.height()))))[0];
}

TEST(Monolithic, FramesAreBackgroundsWithTheFacePasted) {
  auto f = Start();
  ASSERT_TRUE(f);
  auto response = Call(*f, MakeRequest(3, 1, 7));
  ASSERT_TRUE(response.success()) << response.error();
  ASSERT_EQ(response.composited_frames_size(), 3);
  EXPECT_TRUE(response.model_loaded());  // the first call loads the avatar
  EXPECT_GT(response.model_load_time_ms(), 0.f);
  EXPECT_EQ(response.gpu_id(), -1);
  EXPECT_GT(response.inference_time_ms(), 0.f);
  EXPECT_GT(response.audio_processing_ms(), 0.f);
  EXPECT_GT(response.composite_time_ms(), 0.f);
  EXPECT_GE(response.total_time_ms(),
            response.inference_time_ms() + response.audio_processing_ms());
  for (int i = 0; i < 3; ++i) {
    const int index = 1 + i;
    cv::Mat served = Decode(response.composited_frames(i));
    ASSERT_FALSE(served.empty()) << "frame " << i << " is not a JPEG";
    ASSERT_EQ(served.cols, kW);
    ASSERT_EQ(served.rows, kH);
    cv::Mat background = AsMat(lipsync::testing::PatternImage(kW, kH, index));
    const CropRect r = RectOf(index);
    // Away from the rectangle (beyond the 16-pixel JPEG blocks and chroma smoothing that touch
    // it) the served frame is the background's own JPEG.
    const int margin = 24;
    EXPECT_LE(MaxDiff(served, JpegRoundTrip(background),
                      [&](int x, int y) {
                        return x < r.x1 - margin || x >= r.x2 + margin || y < r.y1 - margin ||
                               y >= r.y2 + margin;
                      }),
              2)
        << "frame " << i;
    // Near it, within JPEG loss of the background itself.
    EXPECT_LE(MaxDiff(served, background,
                      [&](int x, int y) {
                        return (x < r.x1 || x >= r.x2 || y < r.y1 || y >= r.y2) &&
                               (x >= r.x1 - margin && x < r.x2 + margin && y >= r.y1 - margin &&
                                y < r.y2 + margin);
                      }),
              MaxDiff(JpegRoundTrip(background), background, [](int, int) { return true; }) + 8)
        << "frame " << i;
    EXPECT_GT(MeanDiffInside(served, background, r), 10.0) << "frame " << i << " kept its face";
  }
}

// The served frames against the UNet, audio module and paste run here on the same inputs; the
// batch starts two frames before the avatar's end, so it wraps round to frame 0. Avatars whose
// frames are kept encoded serve the same.
class MonolithicFrames : public ::testing::TestWithParam<stream::FrameStorage> {};

INSTANTIATE_TEST_SUITE_P(Storage, MonolithicFrames,
                         ::testing::Values(stream::FrameStorage::kDecoded,
                                           stream::FrameStorage::kEncoded),
                         [](const auto& info) { return stream::FrameStorageName(info.param); });

TEST_P(MonolithicFrames, ServedFramesEqualEngineAndPaste) {
  auto f = Start("", GetParam());
  ASSERT_TRUE(f);
  const int batch = 4, start = kFrames - 2;
  auto request = MakeRequest(batch, start, 11);
  auto response = Call(*f, request);
  ASSERT_TRUE(response.success()) << response.error();
  ASSERT_EQ(response.composited_frames_size(), batch);
  auto served_by = f->server->server->avatars()->Find("anna");
  ASSERT_NE(served_by, nullptr);
  ASSERT_EQ(served_by->frames.storage(), GetParam());

  auto avatar = LoadAvatar(f->root / "anna");
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  EngineOptions eo;
  eo.intra_op_threads = 1;
  auto unet = Engine::Create(avatar->model_path(), eo);
  auto encoder = AudioEncoder::Create(avatar->audio_encoder_path(), eo);
  ASSERT_TRUE(unet.ok() && encoder.ok());
  // Audio: the chunk's windows as for a whole signal; output frame i is the chunk's frame
  // lead + i, lead = min(8, start) (the Go clients' chunk starts at frame max(0, start - 8)), and
  // samples past lead + batch + 11 frames are not used.
  const int lead = std::min(8, start);
  const auto* pcm = reinterpret_cast<const float*>(request.raw_audio().data());
  auto mel = MelSpectrogram(pcm, std::min<size_t>(request.raw_audio().size() / sizeof(float),
                                                  static_cast<size_t>(lead + batch + 11) * 640));
  ASSERT_TRUE(mel.ok());
  auto windows = ComputeAudioWindows(**encoder, *mel);
  ASSERT_TRUE(windows.ok());
  ASSERT_GE(windows->shape()[0], batch + lead);
  Tensor audio(DataType::kFloat32, {batch, 32, 16, 16});
  std::memcpy(audio.data(), windows->data_as<float>() + lead * 32 * 16 * 16, audio.byte_size());
  Tensor visual(DataType::kFloat32, {batch, 6, kFace, kFace});
  std::memcpy(visual.data(), request.visual_frames().data(), visual.byte_size());
  auto output = (*unet)->Run({visual.view(), audio.view()});
  ASSERT_TRUE(output.ok()) << output.status().ToString();

  const auto layout = *FaceLayout::ForInputSize(kFace);
  auto frames = avatar->OpenFrames();
  ASSERT_TRUE(frames.ok());
  std::vector<uint8_t> face(static_cast<size_t>(kFace) * kFace * 3);
  for (int i = 0; i < batch; ++i) {
    const int index = (start + i) % kFrames;
    auto frame = (*frames)->Read(index);
    ASSERT_TRUE(frame.ok());
    const CropRect rect = avatar->crop_rects()[index];
    ASSERT_EQ(rect, RectOf(index));
    auto crop = CropFace(*frame, rect, layout);
    ASSERT_TRUE(crop.ok());
    OutputToImage((*output)[0].data_as<float>() + static_cast<size_t>(i) * 3 * kFace * kFace, kFace,
                  face.data());
    ASSERT_TRUE(PasteFace(face.data(), layout, *crop, rect, *frame).ok());
    cv::Mat expected = JpegRoundTrip(AsMat(*frame));
    cv::Mat served = Decode(response.composited_frames(i));
    ASSERT_EQ(served.size(), expected.size());
    // Same pixels through the same encoder: equal up to one step of float rounding in the model.
    EXPECT_LE(MaxDiff(served, expected, [](int, int) { return true; }), 2)
        << "output frame " << i << " (avatar frame " << index << ")";
  }
}

TEST(Monolithic, BatchLimits) {
  auto f = Start();
  ASSERT_TRUE(f);
  for (int batch : {1, 32}) {
    auto response = Call(*f, MakeRequest(batch, 0, batch));
    EXPECT_TRUE(response.success()) << "batch " << batch << ": " << response.error();
    EXPECT_EQ(response.composited_frames_size(), batch);
  }
  for (int batch : {0, 33}) {
    // The byte lengths match the batch size, so the refusal is about the size alone.
    auto request = MakeRequest(batch == 0 ? 1 : batch, 0, 3);
    request.set_batch_size(batch);
    auto response = Call(*f, request);
    EXPECT_FALSE(response.success()) << "batch " << batch;
    EXPECT_NE(response.error().find("batch_size " + std::to_string(batch) + " is outside 1..32"),
              std::string::npos)
        << response.error();
    EXPECT_EQ(response.composited_frames_size(), 0);
  }
}

TEST(Monolithic, ErrorsAreAnsweredAndTheServerGoesOn) {
  auto f = Start();
  ASSERT_TRUE(f);
  struct Case {
    const char* what;
    std::function<void(monolithic::CompositeBatchRequest&)> change;
    const char* message;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {"unknown model", [](auto& r) { r.set_model_id("nobody"); }, "unknown model 'nobody'"},
      {"path as model", [](auto& r) { r.set_model_id("../anna"); }, "not an avatar folder name"},
      {"empty model", [](auto& r) { r.set_model_id(""); }, "model_id is empty"},
      {"short visual",
       [](auto& r) { r.mutable_visual_frames()->resize(r.visual_frames().size() - 4); },
       "visual_frames holds"},
      {"partial sample", [](auto& r) { r.mutable_raw_audio()->append(3, '\0'); },
       "not a whole number of float32 samples"},
      {"no audio", [](auto& r) { r.clear_raw_audio(); }, "the request has no audio"},
      {"NaN face",
       [nan](auto& r) { std::memcpy(r.mutable_visual_frames()->data() + 400, &nan, 4); },
       "visual_frames value 100 is NaN"},
      {"infinite last value",  // the faces are checked a frame at a time: the last one too
       [](auto& r) {
         const float inf = std::numeric_limits<float>::infinity();
         std::memcpy(r.mutable_visual_frames()->data() + r.visual_frames().size() - 4, &inf, 4);
       },
       "is infinite"},
      {"NaN audio", [nan](auto& r) { std::memcpy(r.mutable_raw_audio()->data() + 40, &nan, 4); },
       "raw_audio"},
      {"4 kHz", [](auto& r) { r.set_sample_rate(4000); }, "sample_rate 4000"},
      {"negative start", [](auto& r) { r.set_start_frame_idx(-1); }, "start_frame_idx -1"},
  };
  for (const auto& c : cases) {
    auto request = MakeRequest(2, 0, 5);
    c.change(request);
    auto response = Call(*f, request);
    EXPECT_FALSE(response.success()) << c.what;
    EXPECT_NE(response.error().find(c.message), std::string::npos)
        << c.what << ": " << response.error();
    EXPECT_EQ(response.composited_frames_size(), 0) << c.what;
  }
  auto good = Call(*f, MakeRequest(2, 0, 5));
  EXPECT_TRUE(good.success()) << good.error();
  EXPECT_EQ(good.composited_frames_size(), 2);
  // The metrics count answers by outcome: success=false is not counted as OK. Each call is
  // counted before its answer leaves, so the counts are final here.
  const Metrics& metrics = f->server->server->metrics();
  EXPECT_EQ(testing::FailedRequests(metrics, "InferBatchComposite"), cases.size());
  EXPECT_EQ(metrics.requests("InferBatchComposite", "OK"), 1u);
  EXPECT_EQ(metrics.requests("InferBatchComposite", "NOT_FOUND"), 1u);  // the unknown model
}

// A worker whose allocation fails answers that request with an error; the next one is served.
TEST(Monolithic, AnAllocationFailureFailsOnlyThatRequest) {
  auto f = Start();
  ASSERT_TRUE(f);
  auto first = Call(*f, MakeRequest(2, 0, 5));  // loads the avatar
  ASSERT_TRUE(first.success()) << first.error();
  HostMemory().FailNextAllocations(1);
  auto failed = Call(*f, MakeRequest(2, 0, 5));
  HostMemory().FailNextAllocations(0);
  EXPECT_FALSE(failed.success());
  EXPECT_NE(failed.error().find("memory"), std::string::npos) << failed.error();
  EXPECT_EQ(failed.composited_frames_size(), 0);
  const Metrics& metrics = f->server->server->metrics();
  EXPECT_EQ(metrics.requests("InferBatchComposite", "RESOURCE_EXHAUSTED"), 1u);
  auto next = Call(*f, MakeRequest(2, 0, 5));
  EXPECT_TRUE(next.success()) << next.error();
  EXPECT_EQ(next.composited_frames_size(), 2);
}

TEST(Monolithic, LoadUnloadListStatsHealth) {
  auto f = Start();
  ASSERT_TRUE(f);
  auto health = [&] {
    grpc::ClientContext ctx;
    monolithic::HealthResponse h;
    EXPECT_TRUE(f->stub->Health(&ctx, {}, &h).ok());
    return h;
  };
  auto list = [&] {
    grpc::ClientContext ctx;
    monolithic::ListModelsResponse l;
    EXPECT_TRUE(f->stub->ListModels(&ctx, {}, &l).ok());
    return l;
  };
  auto stats = [&] {
    grpc::ClientContext ctx;
    monolithic::GetModelStatsResponse s;
    EXPECT_TRUE(f->stub->GetModelStats(&ctx, {}, &s).ok());
    return s;
  };
  auto load = [&](const std::string& id) {
    grpc::ClientContext ctx;
    monolithic::LoadModelRequest r;
    r.set_model_id(id);
    r.set_preferred_gpu(-1);
    monolithic::LoadModelResponse l;
    EXPECT_TRUE(f->stub->LoadModel(&ctx, r, &l).ok());
    return l;
  };
  auto unload = [&](const std::string& id) {
    grpc::ClientContext ctx;
    monolithic::UnloadModelRequest r;
    r.set_model_id(id);
    monolithic::UnloadModelResponse u;
    EXPECT_TRUE(f->stub->UnloadModel(&ctx, r, &u).ok());
    return u;
  };

  EXPECT_TRUE(health().healthy());
  EXPECT_EQ(health().loaded_models(), 0);
  EXPECT_EQ(health().max_models(), 8);
  EXPECT_EQ(health().gpu_ids_size(), 0);  // CPU
  auto listed = list();
  ASSERT_EQ(listed.models_size(), 1);
  EXPECT_EQ(listed.models(0).model_id(), "anna");
  EXPECT_FALSE(listed.models(0).loaded());
  EXPECT_EQ(stats().models_size(), 0);

  auto unknown = load("nobody");
  EXPECT_FALSE(unknown.success());
  EXPECT_NE(unknown.error().find("unknown model 'nobody'"), std::string::npos) << unknown.error();
  auto loaded = load("anna");
  ASSERT_TRUE(loaded.success()) << loaded.error();
  EXPECT_GT(loaded.load_time_ms(), 0.f);
  EXPECT_EQ(loaded.gpu_id(), -1);
  EXPECT_EQ(health().loaded_models(), 1);
  listed = list();
  ASSERT_EQ(listed.models_size(), 1);
  EXPECT_TRUE(listed.models(0).loaded());
  EXPECT_EQ(listed.models(0).request_count(), 0);

  double inference_ms = 0;  // as the calls reported it
  for (int k = 0; k < 2; ++k) {
    auto response = Call(*f, MakeRequest(2, k, 9));
    ASSERT_TRUE(response.success()) << response.error();
    EXPECT_FALSE(response.model_loaded());  // already loaded
    inference_ms += response.inference_time_ms();
  }
  auto s = stats();
  ASSERT_EQ(s.models_size(), 1);
  EXPECT_EQ(s.models(0).model_id(), "anna");
  EXPECT_TRUE(s.models(0).loaded());
  EXPECT_EQ(s.models(0).request_count(), 2);
  EXPECT_GT(s.models(0).avg_inference_ms(), 0.f);
  // The total is the calls' UNet time in whole milliseconds; the average is the same per call.
  EXPECT_LE(s.models(0).total_inference_ms(), inference_ms + 1);
  EXPECT_GE(s.models(0).total_inference_ms(), std::floor(inference_ms) - 1);
  EXPECT_NEAR(s.models(0).avg_inference_ms() * 2,
              static_cast<double>(s.models(0).total_inference_ms()), 1.0);
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  EXPECT_LE(s.models(0).last_used_timestamp(), now_s);
  EXPECT_GT(s.models(0).last_used_timestamp(), now_s - 600);
  listed = list();
  EXPECT_EQ(listed.models(0).request_count(), 2);
  EXPECT_FLOAT_EQ(listed.models(0).avg_inference_ms(), s.models(0).avg_inference_ms());

  EXPECT_TRUE(unload("anna").success());
  auto again = unload("anna");
  EXPECT_FALSE(again.success());
  EXPECT_NE(again.error().find("not loaded"), std::string::npos) << again.error();
  EXPECT_EQ(health().loaded_models(), 0);
  EXPECT_FALSE(list().models(0).loaded());
  // A request after the unload loads it again.
  auto reloaded = Call(*f, MakeRequest(1, 0, 2));
  ASSERT_TRUE(reloaded.success()) << reloaded.error();
  EXPECT_TRUE(reloaded.model_loaded());
  EXPECT_GT(reloaded.model_load_time_ms(), 0.f);
  EXPECT_EQ(health().loaded_models(), 1);
}

// A request holds its avatar: unloading it frees nothing the request still uses.
TEST(Monolithic, UnloadWhileHeldKeepsTheAvatarForItsHolder) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "anna");
  AvatarRegistryOptions options = testing::TestRegistryOptions(root.path());
  AvatarRegistry registry(options);
  auto held = registry.Load("anna");
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  std::weak_ptr<LoadedAvatar> watch = *held;
  ASSERT_TRUE(registry.Unload("anna").ok());
  EXPECT_EQ(registry.Find("anna"), nullptr);
  ASSERT_FALSE(watch.expired());
  CompositeTimings timings;
  auto frames = ComposeBatch(**held, MakeRequest(2, 0, 4), &timings);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  EXPECT_EQ(frames->size(), 2u);
  held->reset();
  EXPECT_TRUE(watch.expired());  // the last holder freed it
}

// A full registry refuses another avatar until one is unloaded; a bad avatar folder names its file.
// The server over the avatars under `root` with a host memory budget (0: none).
std::unique_ptr<Fixture> StartOn(const std::string& root, int64_t host_budget) {
  auto f = std::make_unique<Fixture>();
  ServerOptions options = MonolithicServerOptions(root, "");
  options.monolithic_options.avatars.max_host_bytes = host_budget;
  options.monolithic_options.avatars.max_host_set = true;
  f->server = testing::StartServer(options);
  if (!f->server) return nullptr;
  f->stub = monolithic::MonolithicService::NewStub(f->server->channel);
  return f;
}

// The host budget holds the avatars' frames and models and the working memory of runs: four
// avatars take batch-16 requests in turn under a budget with room for the working set of one
// batch and about two and a half avatars (their shared encoder once); idle avatars are evicted,
// every request is answered, and what the budget counts never exceeds it. A budget too small for
// one working set gives a clear RESOURCE_EXHAUSTED and the server goes on.
TEST(Monolithic, TheHostBudgetHoldsAvatarsAndWorkingMemory) {
  ScratchDir root;
  const std::vector<std::string> ids = {"a0", "a1", "a2", "a3"};
  for (const auto& id : ids) WriteTestAvatar(root.path(), id, 20, 640, 480);
  auto request = [](const std::string& id) {
    auto r = MakeRequest(16, 0, 3);
    r.set_model_id(id);
    return r;
  };
  // Measured without a budget: one avatar's memory (its own and the audio encoder that the four
  // share) and the working memory of a batch-16 request.
  int64_t avatar = 0, own = 0, working = 0;
  {
    auto f = StartOn(root.path(), 0);
    ASSERT_TRUE(f);
    ASSERT_TRUE(Call(*f, request("a0")).success());
    HostMemory().ResetPeak();
    auto r = Call(*f, request("a0"));
    ASSERT_TRUE(r.success()) << r.error();
    working = HostMemory().stats().peak_working;
    avatar = f->server->server->avatars()->Usage().host_bytes;
    auto loaded = f->server->server->avatars()->Find("a0");
    ASSERT_TRUE(loaded);
    own = loaded->memory_bytes;
  }
  ASSERT_GT(working, 0);
  ASSERT_GT(own, 0);
  ASSERT_GT(avatar, own);
  const int64_t budget = working + working / 10 + (avatar - own) + own * 5 / 2;
  std::printf("avatar %lld bytes, batch-16 working memory %lld bytes, budget %lld bytes\n",
              static_cast<long long>(avatar), static_cast<long long>(working),
              static_cast<long long>(budget));
  {
    auto f = StartOn(root.path(), budget);
    ASSERT_TRUE(f);
    AvatarRegistry& registry = *f->server->server->avatars();
    HostMemory().ResetPeak();
    for (int round = 0; round < 2; ++round) {
      for (const auto& id : ids) {
        auto r = Call(*f, request(id));
        EXPECT_TRUE(r.success()) << id << ": " << r.error();
        EXPECT_EQ(r.composited_frames_size(), 16);
        const HostMemoryStats pool = HostMemory().stats();
        EXPECT_LE(registry.Usage().host_bytes + pool.working_in_use + pool.cached, budget) << id;
      }
    }
    int64_t evictions = 0;
    for (const auto& state : registry.States()) evictions += state.evictions;
    EXPECT_GE(evictions, 1);
    EXPECT_LE(HostMemory().stats().peak_working, budget - avatar);
  }
  {
    auto f = StartOn(root.path(), avatar + working / 4);
    ASSERT_TRUE(f);
    auto r = Call(*f, request("a0"));
    EXPECT_FALSE(r.success());
    EXPECT_NE(r.error().find("memory"), std::string::npos) << r.error();
    EXPECT_EQ(f->server->server->metrics().requests("InferBatchComposite", "RESOURCE_EXHAUSTED"),
              1u);
    grpc::ClientContext ctx;
    monolithic::ListModelsResponse models;
    EXPECT_TRUE(f->stub->ListModels(&ctx, {}, &models).ok());  // still serving
    EXPECT_EQ(models.models_size(), 4);
  }
}

TEST(Monolithic, RegistryCapacityAndBadFolders) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "anna");
  WriteTestAvatar(root.path(), "bob");
  WriteFile(root / "broken/avatar.json", "{");
  AvatarRegistryOptions options = testing::TestRegistryOptions(root.path());
  options.max_models = 1;
  AvatarRegistry registry(options);
  EXPECT_EQ(registry.Available(), (std::vector<std::string>{"anna", "bob", "broken"}));
  bool loaded_now = false;
  auto held = registry.Load("anna", &loaded_now);
  ASSERT_TRUE(held.ok());
  EXPECT_TRUE(loaded_now);
  ASSERT_TRUE(registry.Load("anna", &loaded_now).ok());
  EXPECT_FALSE(loaded_now);  // already there
  // Full, and anna is in use: refused.
  auto full = registry.Load("bob");
  ASSERT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("cap of 1"), std::string::npos) << full.status().message();
  // Full, and anna is idle: evicted to make room.
  held->reset();
  EXPECT_TRUE(registry.Load("bob").ok());
  EXPECT_EQ(registry.Find("anna"), nullptr);
  ASSERT_TRUE(registry.Unload("bob").ok());
  auto broken = registry.Load("broken");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("avatar.json"), std::string::npos)
      << broken.status().message();
  EXPECT_TRUE(registry.Loaded().empty());
}

TEST(Monolithic, OwnPort) {
  auto f = Start("127.0.0.1:0");
  ASSERT_TRUE(f);
  EXPECT_NE(f->server->server->monolithic_port(), f->server->server->port());
  grpc::ClientContext ctx;
  monolithic::HealthResponse h;
  ASSERT_TRUE(f->stub->Health(&ctx, {}, &h).ok());
  EXPECT_TRUE(h.healthy());
  // The main port does not carry it.
  auto main_stub = monolithic::MonolithicService::NewStub(f->server->channel);
  grpc::ClientContext ctx2;
  EXPECT_EQ(main_stub->Health(&ctx2, {}, &h).error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

// Its own port, when another server holds it, is refused with an error naming it; the other
// server keeps serving.
TEST(Monolithic, OwnPortInUseIsRefused) {
  auto f = Start("127.0.0.1:0");
  ASSERT_TRUE(f);
  const std::string taken = "127.0.0.1:" + std::to_string(f->server->server->monolithic_port());
  auto second =
      Server::Start(f->server->engine.get(), MonolithicServerOptions(f->root.path(), taken));
  ASSERT_FALSE(second.ok()) << "a second monolithic service started on " << taken;
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("cannot listen on " + taken), std::string::npos)
      << second.status().message();
  grpc::ClientContext ctx;
  monolithic::HealthResponse h;
  ASSERT_TRUE(f->stub->Health(&ctx, {}, &h).ok());
  EXPECT_TRUE(h.healthy());
}

}  // namespace
}  // namespace lipsync::server
