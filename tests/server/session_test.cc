// lipsync.v1.Sessions over loopback on avatars imported from the fixture dataset with the tiny
// models: the frames against the Renderer's (`lipsync render`) on the same audio for several chunk
// sizes, frame counts and times, pacing, cancel, a vanished client, idle timeout, many sessions on
// two avatars at once, and bad input.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <random>
#include <thread>

#include "avatar_test_util.h"
#include "lipsync/audio.h"
#include "lipsync/render.h"
#include "pipeline/stream/lipsync_stream.h"
#include "pipeline/stream/stored_frames.h"
#include "server/core/avatar_registry.h"
#include "server/protocols/session_service.h"
#include "server_test_util.h"
#include "test_avatars.h"
#include "wav_file.h"

namespace lipsync::server {
namespace {

using lipsync::testing::FixturePath;
using lipsync::testing::ScratchDir;
using lipsync::testing::TestModelPath;
using lipsync::testing::WriteWav;
using lipsync::v1::SessionRequest;
using lipsync::v1::SessionResponse;

// A gliding tone at 16 kHz; `shift` makes different audio.
std::vector<float> Speech(double seconds, double shift = 0.0) {
  std::vector<float> pcm(static_cast<size_t>(seconds * kAudioSampleRate));
  for (size_t i = 0; i < pcm.size(); ++i) {
    const double t = static_cast<double>(i);
    pcm[i] = 0.4f * static_cast<float>(std::sin(0.05 * t + 1e-6 * t * t + shift));
  }
  return pcm;
}

std::vector<int16_t> ToS16(const std::vector<float>& pcm) {
  std::vector<int16_t> out(pcm.size());
  for (size_t i = 0; i < pcm.size(); ++i)
    out[i] = static_cast<int16_t>(std::lround(pcm[i] * 20000));
  return out;
}

// The Renderer's frames (PNG, lossless) of `wav` on the avatar folder.
std::vector<Image> RenderFrames(const std::string& avatar_dir, const std::string& wav,
                                const std::string& out_dir) {
  auto avatar = LoadAvatar(avatar_dir);
  EXPECT_TRUE(avatar.ok()) << avatar.status().ToString();
  auto renderer = Renderer::Create(*avatar);
  EXPECT_TRUE(renderer.ok()) << renderer.status().ToString();
  RenderOptions options;
  options.batch = 4;
  auto stats = (*renderer)->Render(wav, RenderOutput::Frames(out_dir, "png"), options);
  EXPECT_TRUE(stats.ok()) << stats.status().ToString();
  std::vector<Image> frames;
  for (int64_t i = 0; stats.ok() && i < stats->frames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "/%06lld.png", static_cast<long long>(i));
    auto image = LoadImage(out_dir + name);
    EXPECT_TRUE(image.ok());
    frames.push_back(*image);
  }
  return frames;
}

struct SessionResult {
  grpc::Status status;
  lipsync::v1::SessionStarted started;
  std::vector<lipsync::v1::SessionFrame> frames;
  std::vector<double> arrival_s;  // each frame's arrival, in seconds after the first frame's
};

lipsync::v1::SessionStart StartMessage(
    const std::string& avatar,
    lipsync::v1::SampleFormat format = lipsync::v1::SAMPLE_FORMAT_F32LE) {
  lipsync::v1::SessionStart start;
  start.set_model_id(avatar);
  start.set_sample_format(format);
  start.set_frame_format(lipsync::v1::FRAME_FORMAT_BGR);
  return start;
}

// Streams `audio` (bytes) in chunks of `chunk_bytes` from a second thread, then `end` when asked,
// and reads everything the server sends.
SessionResult RunSession(lipsync::v1::Sessions::Stub& stub, const lipsync::v1::SessionStart& start,
                         const std::string& audio, size_t chunk_bytes, bool end = true) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
  auto stream = stub.Session(&context);
  std::thread writer([&] {
    SessionRequest request;
    *request.mutable_start() = start;
    if (!stream->Write(request)) return;
    for (size_t off = 0; off < audio.size(); off += chunk_bytes) {
      request.set_audio(audio.substr(off, chunk_bytes));
      if (!stream->Write(request)) return;
    }
    if (end) {
      request.mutable_end();
      stream->Write(request);
    }
    stream->WritesDone();
  });
  SessionResult result;
  SessionResponse response;
  std::chrono::steady_clock::time_point first;
  while (stream->Read(&response)) {
    if (response.has_started()) result.started = response.started();
    if (response.has_frame()) {
      const auto now = std::chrono::steady_clock::now();
      if (result.frames.empty()) first = now;
      result.arrival_s.push_back(std::chrono::duration<double>(now - first).count());
      result.frames.push_back(std::move(*response.mutable_frame()));
    }
  }
  writer.join();
  result.status = stream->Finish();
  return result;
}

std::string Bytes(const void* data, size_t n) {
  return std::string(static_cast<const char*>(data), n);
}

// Two avatars imported from the fixture dataset ("anna" and "bob") and a server over them.
class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override { StartWith(SessionOptions{}); }

  void StartWith(SessionOptions sessions,
                 stream::FrameStorage frames = stream::FrameStorage::kDecoded) {
    for (const char* id : {"anna", "bob"}) {
      if (std::filesystem::exists(root_ / id)) continue;
      AvatarImportOptions o;
      o.out_dir = root_ / id;
      o.model = TestModelPath("tiny.onnx");
      o.audio_encoder = TestModelPath("tiny_audio_encoder.onnx");
      auto avatar = ImportSyncTalkDataset(FixturePath("dataset"), o);
      ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
    }
    server_.reset();
    ServerOptions options = testing::Options(1, 0);
    options.batching.preferred_batch = 1;
    options.monolithic_options.avatars.root = root_.path();
    options.monolithic_options.avatars.engine.intra_op_threads = 1;
    options.monolithic_options.avatars.frames = frames;
    options.sessions = sessions;
    server_ = testing::StartServer(options);
    ASSERT_TRUE(server_);
    ASSERT_NE(server_->server->session_service(), nullptr);
    stub_ = lipsync::v1::Sessions::NewStub(server_->channel);
  }

  // Polls the open-sessions gauge until it is `n` (true) or a generous deadline passes.
  bool WaitForOpenSessions(int64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (server_->server->metrics().sessions_open() == n &&
          server_->server->session_service()->open_sessions() == n)
        return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  ScratchDir root_, scratch_;
  std::unique_ptr<testing::TestServer> server_;
  std::unique_ptr<lipsync::v1::Sessions::Stub> stub_;
};

void ExpectFramesEqual(const SessionResult& got, const std::vector<Image>& want,
                       const std::string& what) {
  ASSERT_TRUE(got.status.ok()) << what << ": " << got.status.error_message();
  ASSERT_EQ(got.frames.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& f = got.frames[i];
    ASSERT_EQ(f.index(), static_cast<int64_t>(i)) << what;
    EXPECT_DOUBLE_EQ(f.pts_s(), static_cast<double>(i) / 25.0) << what;
    ASSERT_EQ(f.format(), lipsync::v1::FRAME_FORMAT_BGR);
    ASSERT_EQ(f.width(), want[i].width);
    ASSERT_EQ(f.height(), want[i].height);
    ASSERT_EQ(f.data().size(), want[i].bgr.size()) << what;
    ASSERT_EQ(std::memcmp(f.data().data(), want[i].bgr.data(), want[i].bgr.size()), 0)
        << what << ": frame " << i << " differs from the render's";
  }
}

TEST_F(SessionTest, ChunkSizesGiveTheRenderFrames) {
  const auto pcm = Speech(2.5);
  WriteWav(scratch_ / "a.wav", pcm.data(), pcm.size(), 4, 3);
  const auto want = RenderFrames(root_ / "anna", scratch_ / "a.wav", scratch_ / "render_a");
  // Frames per the spec: W + 2 for T = 1 + samples / 200 mel frames.
  ASSERT_EQ(static_cast<int64_t>(want.size()),
            VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop));
  const std::string audio = Bytes(pcm.data(), pcm.size() * 4);
  for (size_t samples : {size_t{1}, size_t{333}, size_t{16000}}) {
    auto got = RunSession(*stub_, StartMessage("anna"), audio, samples * 4);
    ExpectFramesEqual(got, want, "chunks of " + std::to_string(samples) + " samples");
    EXPECT_EQ(got.started.width(), want[0].width);
    EXPECT_EQ(got.started.start_frame(), 1);
  }

  // 10 s chunks: 10.5 s of audio in two.
  const auto long_pcm = Speech(10.5, 1.0);
  WriteWav(scratch_ / "b.wav", long_pcm.data(), long_pcm.size(), 4, 3);
  const auto long_want = RenderFrames(root_ / "anna", scratch_ / "b.wav", scratch_ / "render_b");
  auto got = RunSession(*stub_, StartMessage("anna"), Bytes(long_pcm.data(), long_pcm.size() * 4),
                        kMaxSessionChunkSamples * 4);
  ExpectFramesEqual(got, long_want, "chunks of 10 s");
  EXPECT_EQ(WaitForOpenSessions(0), true);
}

TEST_F(SessionTest, Int16AudioGivesTheRenderFrames) {
  const auto pcm = ToS16(Speech(1.3, 2.0));
  WriteWav(scratch_ / "s16.wav", pcm.data(), pcm.size(), 2, 1);
  const auto want = RenderFrames(root_ / "bob", scratch_ / "s16.wav", scratch_ / "render");
  auto got = RunSession(*stub_, StartMessage("bob", lipsync::v1::SAMPLE_FORMAT_S16LE),
                        Bytes(pcm.data(), pcm.size() * 2), 1000 * 2);
  ExpectFramesEqual(got, want, "int16 chunks of 1000 samples");
}

// An avatar whose frames are kept encoded (its PNG files' bytes, decoded for each frame served)
// gives the same frames as render.
TEST_F(SessionTest, EncodedFramesGiveTheRenderFrames) {
  StartWith(SessionOptions{}, stream::FrameStorage::kEncoded);
  const auto pcm = Speech(1.7, 3.0);
  WriteWav(scratch_ / "e.wav", pcm.data(), pcm.size(), 4, 3);
  const auto want = RenderFrames(root_ / "anna", scratch_ / "e.wav", scratch_ / "render_e");
  auto got = RunSession(*stub_, StartMessage("anna"), Bytes(pcm.data(), pcm.size() * 4), 3200 * 4);
  ExpectFramesEqual(got, want, "encoded frames");
  auto served_by = server_->server->avatars()->Find("anna");
  ASSERT_NE(served_by, nullptr);
  EXPECT_EQ(served_by->frames.storage(), stream::FrameStorage::kEncoded);
}

TEST_F(SessionTest, FrameCountsAndJpeg) {
  for (double seconds : {0.19, 0.5, 1.04}) {
    const auto pcm = Speech(seconds);
    auto start = StartMessage("anna");
    start.set_frame_format(lipsync::v1::FRAME_FORMAT_JPEG);
    start.set_jpeg_quality(90);
    start.set_walk(lipsync::v1::WALK_LOOP);
    start.set_start_frame(11);
    auto got = RunSession(*stub_, start, Bytes(pcm.data(), pcm.size() * 4), 777 * 4);
    ASSERT_TRUE(got.status.ok()) << got.status.error_message();
    const int64_t expected = VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop);
    ASSERT_GT(expected, 0);
    ASSERT_EQ(static_cast<int64_t>(got.frames.size()), expected) << seconds << " s";
    for (size_t i = 0; i < got.frames.size(); ++i) {
      const auto& f = got.frames[i];
      EXPECT_EQ(f.index(), static_cast<int64_t>(i));
      EXPECT_EQ(f.avatar_frame(), static_cast<int64_t>((11 + i) % 12));  // loop over 12 frames
      EXPECT_EQ(f.format(), lipsync::v1::FRAME_FORMAT_JPEG);
      ASSERT_GE(f.data().size(), 4u);
      EXPECT_EQ(static_cast<uint8_t>(f.data()[0]), 0xFF);  // JPEG start of image
      EXPECT_EQ(static_cast<uint8_t>(f.data()[1]), 0xD8);
    }
  }
}

// Real-time pacing sends frame i no earlier than i / 25 s after frame 0, and keeps up: the
// frames are all made long before they are due, so the whole stream takes about the audio's
// duration, well under the 1.5 times that half speed would exceed.
TEST_F(SessionTest, RealTimePacingTakesTheAudiosDuration) {
  const auto pcm = Speech(5.0);
  auto start = StartMessage("anna");
  start.set_pacing(lipsync::v1::PACING_REAL_TIME);
  auto got = RunSession(*stub_, start, Bytes(pcm.data(), pcm.size() * 4), pcm.size() * 4);
  ASSERT_TRUE(got.status.ok()) << got.status.error_message();
  const int64_t frames = VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop);
  ASSERT_EQ(static_cast<int64_t>(got.frames.size()), frames);
  // Arrivals may bunch up by the network's and the scheduler's delays: half a second of slack.
  for (int64_t i = 0; i < frames; ++i) {
    ASSERT_GE(got.arrival_s[i], static_cast<double>(i) / 25.0 - 0.5) << "frame " << i;
  }
  const double nominal = static_cast<double>(frames - 1) / 25.0;  // 4.92 s
  EXPECT_LE(got.arrival_s.back(), 1.5 * nominal);
}

TEST_F(SessionTest, CancelMidStreamFreesTheSession) {
  const auto pcm = Speech(6.0);
  grpc::ClientContext context;
  auto stream = stub_->Session(&context);
  SessionRequest request;
  *request.mutable_start() = StartMessage("anna");
  auto* start = request.mutable_start();
  start->set_pacing(lipsync::v1::PACING_REAL_TIME);  // so that frames are still due at the cancel
  ASSERT_TRUE(stream->Write(request));
  request.set_audio(Bytes(pcm.data(), pcm.size() * 4));
  ASSERT_TRUE(stream->Write(request));
  SessionResponse response;
  int frames = 0;
  while (frames < 3 && stream->Read(&response)) frames += response.has_frame() ? 1 : 0;
  ASSERT_EQ(frames, 3);
  EXPECT_EQ(server_->server->session_service()->open_sessions(), 1);
  context.TryCancel();
  while (stream->Read(&response)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitForOpenSessions(0));
  EXPECT_EQ(server_->server->session_service()->live_avatars(), 0);
}

TEST_F(SessionTest, VanishedClientFreesTheSession) {
  const auto pcm = Speech(6.0);
  {
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    auto stub = lipsync::v1::Sessions::NewStub(channel);
    auto context = std::make_unique<grpc::ClientContext>();
    auto stream = stub->Session(context.get());
    SessionRequest request;
    *request.mutable_start() = StartMessage("bob");
    request.mutable_start()->set_pacing(lipsync::v1::PACING_REAL_TIME);
    ASSERT_TRUE(stream->Write(request));
    request.set_audio(Bytes(pcm.data(), pcm.size() * 4));
    ASSERT_TRUE(stream->Write(request));
    SessionResponse response;
    while (stream->Read(&response) && !response.has_frame()) {
    }
    ASSERT_TRUE(response.has_frame());
    // The client goes away without finishing: stream, call and channel dropped.
    stream.reset();
    context.reset();
  }
  EXPECT_TRUE(WaitForOpenSessions(0));
  EXPECT_EQ(server_->server->session_service()->live_avatars(), 0);
  // The server still serves.
  const auto short_pcm = Speech(0.5);
  auto got =
      RunSession(*stub_, StartMessage("bob"), Bytes(short_pcm.data(), short_pcm.size() * 4), 4000);
  EXPECT_TRUE(got.status.ok()) << got.status.error_message();
}

// A client that goes quiet is cut off once the idle timeout has passed since its last message:
// not before it, and not at the 30 s default.
TEST_F(SessionTest, IdleSessionTimesOut) {
  SessionOptions sessions;
  sessions.idle_timeout = std::chrono::milliseconds(1000);
  ASSERT_LT(sessions.idle_timeout, SessionOptions{}.idle_timeout / 3);
  StartWith(sessions);
  const auto pcm = Speech(0.3);
  grpc::ClientContext context;
  auto stream = stub_->Session(&context);
  SessionRequest request;
  *request.mutable_start() = StartMessage("anna");
  ASSERT_TRUE(stream->Write(request));
  request.set_audio(Bytes(pcm.data(), pcm.size() * 4));
  ASSERT_TRUE(stream->Write(request));
  const auto last_message = std::chrono::steady_clock::now();
  // ... and nothing more: the server ends the session.
  SessionResponse response;
  while (stream->Read(&response)) {
  }
  const double quiet_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - last_message).count();
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  EXPECT_NE(status.error_message().find("idle timeout"), std::string::npos)
      << status.error_message();
  EXPECT_GE(quiet_s, 0.9);
  EXPECT_LE(quiet_s, 10.0);  // seconds of slack for a loaded machine, a third of the default
  EXPECT_TRUE(WaitForOpenSessions(0));
}

TEST_F(SessionTest, SixteenSessionsOnTwoAvatars) {
  const auto pcm = Speech(1.5, 3.0);
  WriteWav(scratch_ / "c.wav", pcm.data(), pcm.size(), 4, 3);
  const auto want = RenderFrames(root_ / "anna", scratch_ / "c.wav", scratch_ / "render");
  const std::string audio = Bytes(pcm.data(), pcm.size() * 4);
  std::vector<SessionResult> results(16);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < results.size(); ++i) {
    clients.emplace_back([&, i] {
      results[i] =
          RunSession(*stub_, StartMessage(i % 2 ? "bob" : "anna"), audio, (500 + 97 * i) * 4);
    });
  }
  for (auto& t : clients) t.join();
  // Both avatars are copies of one dataset with the same models: every session gets the render's
  // frames, whichever sessions shared its batches.
  for (size_t i = 0; i < results.size(); ++i) {
    ExpectFramesEqual(results[i], want, "session " + std::to_string(i));
  }
  EXPECT_TRUE(WaitForOpenSessions(0));
  // ... and sessions did share batches: with eight sessions on each avatar's worker, the frames
  // of several wait together while a batch runs.
  const Metrics& metrics = server_->server->metrics();
  uint64_t shared = 0;
  for (int sessions = 2; sessions <= 16; ++sessions) {
    shared += metrics.session_batches_with_sessions(sessions);
  }
  EXPECT_GT(shared, 0u) << metrics.RenderPrometheus();
}

// Opens a session (start message, then the server's `started`) and keeps it open.
struct OpenSession {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<SessionRequest, SessionResponse>> stream;
  SessionResponse first;  // the server's first reply, or nothing when the stream ended at once
  bool replied = false;

  OpenSession(lipsync::v1::Sessions::Stub& stub, const std::string& avatar) {
    stream = stub.Session(&context);
    SessionRequest request;
    *request.mutable_start() = StartMessage(avatar);
    stream->Write(request);
    replied = stream->Read(&first);
  }
};

TEST_F(SessionTest, MaxSessionsIsEnforced) {
  SessionOptions sessions;
  sessions.max_sessions = 2;
  sessions.idle_timeout = std::chrono::minutes(10);  // the open sessions wait on the test
  StartWith(sessions);
  OpenSession a(*stub_, "anna"), b(*stub_, "bob");
  ASSERT_TRUE(a.replied && a.first.has_started());
  ASSERT_TRUE(b.replied && b.first.has_started());

  // A third is refused while both are open, and says why.
  OpenSession c(*stub_, "anna");
  EXPECT_FALSE(c.replied);
  if (c.replied) c.context.TryCancel();  // wrongly accepted: do not wait for its idle timeout
  const grpc::Status refused = c.stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("2 sessions are open"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(server_->server->metrics().requests("Session", "RESOURCE_EXHAUSTED"), 1u);

  // `a` ends normally; the server counts it closed before it sends the status, so a new session
  // is accepted as soon as `a`'s status has arrived.
  const auto pcm = Speech(0.5);
  SessionRequest request;
  request.set_audio(Bytes(pcm.data(), pcm.size() * 4));
  ASSERT_TRUE(a.stream->Write(request));
  request.mutable_end();
  ASSERT_TRUE(a.stream->Write(request));
  a.stream->WritesDone();
  SessionResponse response;
  int64_t frames = 0;
  while (a.stream->Read(&response)) frames += response.has_frame() ? 1 : 0;
  const grpc::Status ended = a.stream->Finish();
  ASSERT_TRUE(ended.ok()) << ended.error_message();
  EXPECT_EQ(frames, VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop));

  OpenSession d(*stub_, "anna");
  ASSERT_TRUE(d.replied) << d.stream->Finish().error_message();
  EXPECT_TRUE(d.first.has_started());
  EXPECT_EQ(server_->server->session_service()->open_sessions(), 2);
  for (OpenSession* open : {&b, &d}) {
    open->context.TryCancel();
    while (open->stream->Read(&response)) {
    }
    open->stream->Finish();
  }
  EXPECT_TRUE(WaitForOpenSessions(0));
}

// A live stream on a loaded avatar, as a session opens one: `batch` frames per job, `open`
// batches under way at most.
struct LiveStream {
  std::unique_ptr<stream::StoredFrames> frames;
  std::unique_ptr<stream::LipSyncStream> stream;
};

LiveStream OpenLive(LoadedAvatar& a, int batch, int open) {
  LiveStream live;
  live.frames = std::make_unique<stream::StoredFrames>(a.frames, a.avatar.crop_rects(), a.layout);
  auto sequence = FrameSequence::Create(a.avatar.frame_count(), FrameOrder::kPingPong);
  EXPECT_TRUE(sequence.ok());
  live.stream = std::make_unique<stream::LipSyncStream>(*a.scheduler, a.scheduled, *a.encoder,
                                                        *live.frames, *sequence, a.layout,
                                                        LiveStreamOptions(a, batch, open));
  return live;
}

// Pulls every frame of a stream whose audio has ended, handing its waiting frames over as
// batches are pulled.
std::vector<Image> Drain(stream::LipSyncStream& s) {
  std::vector<Image> frames;
  for (;;) {
    EXPECT_TRUE(s.PrepareWaiting().ok());
    auto frame = s.Next();
    EXPECT_TRUE(frame.ok()) << frame.status().ToString();
    if (!frame.ok() || !*frame) return frames;
    EXPECT_EQ((*frame)->index, static_cast<int64_t>(frames.size()));
    frames.push_back(std::move((*frame)->frame));
  }
}

int MaxDifference(const Image& a, const Image& b) {
  if (a.bgr.size() != b.bgr.size()) return 256;
  int most = 0;
  for (size_t i = 0; i < a.bgr.size(); ++i) most = std::max(most, std::abs(a.bgr[i] - b.bgr[i]));
  return most;
}

// The frames of three sessions on one avatar, queued while the scheduler runs another batch, run
// as one batch, and each session gets its own frames back in order.
TEST_F(SessionTest, FramesOfSeveralSessionsShareOneBatch) {
  AvatarRegistry registry(testing::TestRegistryOptions(root_.path()));
  auto avatar = registry.Load("anna");
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  constexpr int kSessions = 3, kBatch = 2;
  Metrics metrics;
  CallGate gate;
  SessionService service(&registry, SessionOptions{}, &metrics, &gate);  // counts the batches
  // Each session's audio ends after 0.2 s: 4 frames, the first 2 handed over at once.
  std::vector<std::vector<float>> audio;
  for (int i = 0; i < kSessions; ++i) audio.push_back(Speech(0.2, 1.5 * i));

  // The first batch is held on the worker (the observer runs before it) until the test lets go.
  std::promise<void> taken, release;
  auto released = release.get_future().share();
  std::atomic<int> batches{0};
  registry.scheduler().SetBatchObserver([&, released](const runtime::BatchRecord&) {
    if (batches++ == 0) {
      taken.set_value();
      released.wait();
    }
  });
  LiveStream first = OpenLive(**avatar, 1, 1);
  const auto pcm = Speech(0.5);
  ASSERT_TRUE(first.stream->Push(pcm.data(), pcm.size()).ok());
  ASSERT_TRUE(first.stream->PrepareWaiting().ok());
  taken.get_future().wait();  // the worker holds `first`'s batch
  std::vector<LiveStream> sessions;
  for (int i = 0; i < kSessions; ++i) {
    sessions.push_back(OpenLive(**avatar, kBatch, 1));
    auto& s = *sessions.back().stream;
    ASSERT_TRUE(s.Push(audio[i].data(), audio[i].size()).ok());
    ASSERT_TRUE(s.Finish().ok());
    ASSERT_EQ(s.frames_total(), 4);
    ASSERT_TRUE(s.PrepareWaiting().ok());
    ASSERT_EQ(s.windows_waiting(), 2u);  // one batch of 2 under way, 2 frames wait for room
  }
  release.set_value();
  std::vector<std::vector<Image>> got;
  for (auto& session : sessions) got.push_back(Drain(*session.stream));
  registry.scheduler().SetBatchObserver(nullptr);

  EXPECT_EQ(metrics.session_batches_of_size(1), 1u);  // `first`, alone
  EXPECT_GE(metrics.session_batches_with_sessions(kSessions), 1u);
  EXPECT_GE(metrics.session_batches_of_size(kSessions * kBatch), 1u);  // all three together

  // The reference: each session's audio alone on the model, one frame per batch.
  constexpr int kTolerance = 1;  // the UNet's CPU results do not depend on the batch
  std::vector<std::vector<Image>> want;
  for (int i = 0; i < kSessions; ++i) {
    LiveStream alone = OpenLive(**avatar, 1, 1);
    ASSERT_TRUE(alone.stream->Push(audio[i].data(), audio[i].size()).ok());
    ASSERT_TRUE(alone.stream->Finish().ok());
    want.push_back(Drain(*alone.stream));
  }
  for (int i = 0; i < kSessions; ++i) {
    ASSERT_EQ(got[i].size(), 4u);
    ASSERT_EQ(want[i].size(), 4u);
    for (size_t k = 0; k < 4; ++k) {
      EXPECT_LE(MaxDifference(got[i][k], want[i][k]), kTolerance)
          << "session " << i << " frame " << k;
      // A frame given to another session would be seen: the sessions' audio differs.
      for (int j = 0; j < i; ++j) EXPECT_GT(MaxDifference(want[i][k], want[j][k]), kTolerance);
    }
  }
}

// Avatars take turns on the device: an avatar with a backlog runs one batch and then waits for
// the others that have frames queued, so it cannot starve another avatar. The test holds anna's
// first batch on the worker while anna's second and bob's first are queued, then checks the order
// the batches ran in.
TEST_F(SessionTest, AvatarsTakeTurnsOnTheModel) {
  AvatarRegistry registry(testing::TestRegistryOptions(root_.path()));
  auto anna = registry.Load("anna");
  auto bob = registry.Load("bob");
  ASSERT_TRUE(anna.ok()) << anna.status().ToString();
  ASSERT_TRUE(bob.ok()) << bob.status().ToString();
  Metrics metrics;
  SessionOptions options;
  options.max_batch = 2;
  CallGate gate;
  SessionService service(&registry, options, &metrics, &gate);
  std::mutex mu;
  std::vector<std::string> order;
  std::promise<void> taken, release;
  auto released = release.get_future().share();
  registry.scheduler().SetBatchObserver([&, released](const runtime::BatchRecord& r) {
    bool first = false;
    {
      std::lock_guard lock(mu);
      order.push_back(r.model);
      first = order.size() == 1;
    }
    if (first) {
      taken.set_value();
      released.wait();
    }
  });
  const auto pcm = Speech(0.6);
  LiveStream anna_live = OpenLive(**anna, 2, 2), bob_live = OpenLive(**bob, 2, 1);
  ASSERT_TRUE(anna_live.stream->Push(pcm.data(), pcm.size()).ok());
  ASSERT_GE(anna_live.stream->windows_waiting(), 4u);
  ASSERT_TRUE(anna_live.stream->Prepare(false).ok());    // anna's first batch, 1 frame...
  ASSERT_TRUE(anna_live.stream->Prepare(false).ok());    // ...and 2: it is full and goes
  taken.get_future().wait();                             // the worker holds it
  ASSERT_TRUE(anna_live.stream->PrepareWaiting().ok());  // anna's second batch
  ASSERT_EQ(anna_live.stream->batches_open(), 2);
  ASSERT_TRUE(bob_live.stream->Push(pcm.data(), pcm.size()).ok());
  ASSERT_TRUE(bob_live.stream->PrepareWaiting().ok());  // bob's first
  release.set_value();
  for (auto [live, frames] : {std::pair{&anna_live, 4}, std::pair{&bob_live, 2}}) {
    for (int k = 0; k < frames; ++k) {  // the batches queued so far
      auto frame = live->stream->Next();
      ASSERT_TRUE(frame.ok() && *frame) << frame.status().ToString();
    }
  }
  std::lock_guard lock(mu);
  ASSERT_GE(order.size(), 3u);
  EXPECT_EQ(std::vector<std::string>(order.begin(), order.begin() + 3),
            (std::vector<std::string>{"anna", "bob", "anna"}))
      << "anna's second batch ran before bob had his turn";
  EXPECT_GE(metrics.session_batches_of_size(2), 3u);
}

TEST_F(SessionTest, BadInputIsRefusedAndTheServerGoesOn) {
  const auto pcm = Speech(0.5);
  const std::string audio = Bytes(pcm.data(), pcm.size() * 4);
  auto expect = [&](const lipsync::v1::SessionStart& start, const std::string& bytes,
                    grpc::StatusCode code, const std::string& words) {
    auto got = RunSession(*stub_, start, bytes, 4000);
    EXPECT_EQ(got.status.error_code(), code) << got.status.error_message();
    EXPECT_NE(got.status.error_message().find(words), std::string::npos)
        << got.status.error_message();
  };
  expect(StartMessage("nobody"), audio, grpc::StatusCode::NOT_FOUND, "nobody");
  expect(StartMessage("../anna"), audio, grpc::StatusCode::INVALID_ARGUMENT, "model_id");
  expect(StartMessage("anna", lipsync::v1::SAMPLE_FORMAT_UNSPECIFIED), audio,
         grpc::StatusCode::INVALID_ARGUMENT, "sample_format");
  expect(StartMessage("anna", lipsync::v1::SAMPLE_FORMAT_S16LE), "abc",
         grpc::StatusCode::INVALID_ARGUMENT, "3 bytes");
  expect(StartMessage("anna"), audio.substr(0, 4001), grpc::StatusCode::INVALID_ARGUMENT,
         "whole samples");
  std::vector<float> nan_pcm = pcm;
  nan_pcm[123] = std::numeric_limits<float>::quiet_NaN();
  expect(StartMessage("anna"), Bytes(nan_pcm.data(), nan_pcm.size() * 4),
         grpc::StatusCode::INVALID_ARGUMENT, "NaN");
  auto bad_start = StartMessage("anna");
  bad_start.set_start_frame(12);
  expect(bad_start, audio, grpc::StatusCode::INVALID_ARGUMENT, "start frame 12");
  expect(StartMessage("anna"), audio.substr(0, 400), grpc::StatusCode::INVALID_ARGUMENT,
         "too short");

  // Audio before the start message.
  {
    grpc::ClientContext context;
    auto stream = stub_->Session(&context);
    SessionRequest request;
    request.set_audio(audio);
    stream->Write(request);
    stream->WritesDone();
    SessionResponse response;
    while (stream->Read(&response)) {
    }
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("first message must be start"), std::string::npos);
  }
  EXPECT_TRUE(WaitForOpenSessions(0));
  auto good = RunSession(*stub_, StartMessage("anna"), audio, 4000);
  EXPECT_TRUE(good.status.ok()) << good.status.error_message();
  EXPECT_EQ(static_cast<int64_t>(good.frames.size()),
            VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop));
}

TEST_F(SessionTest, ServesAvatarsWithoutAModel) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.monolithic_options.avatars.root = root_.path();
  options.monolithic_options.avatars.engine.intra_op_threads = 1;
  auto server = Server::Start(nullptr, options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = lipsync::v1::Sessions::NewStub(channel);
  const auto pcm = Speech(0.5);
  auto got = RunSession(*stub, StartMessage("anna"), Bytes(pcm.data(), pcm.size() * 4), 4000);
  EXPECT_TRUE(got.status.ok()) << got.status.error_message();
  EXPECT_EQ(static_cast<int64_t>(got.frames.size()),
            VideoFrameCount(1 + static_cast<int64_t>(pcm.size()) / kMelHop));
  // The model services are not there.
  grpc::ClientContext context;
  lipsync::v1::GetModelInfoRequest request;
  lipsync::v1::ModelInfo info;
  EXPECT_EQ(
      lipsync::v1::LipSync::NewStub(channel)->GetModelInfo(&context, request, &info).error_code(),
      grpc::StatusCode::UNIMPLEMENTED);
  (*server)->Shutdown();
  EXPECT_EQ(Server::Start(nullptr, ServerOptions{}).status().code(), StatusCode::kInvalidArgument);
}

TEST(SessionAudio, DecodesBothFormats) {
  const int16_t s16[3] = {-32768, 0, 16384};
  auto a = DecodeSessionAudio(Bytes(s16, sizeof(s16)), lipsync::v1::SAMPLE_FORMAT_S16LE);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (std::vector<float>{-1.0f, 0.0f, 0.5f}));
  const float f32[2] = {0.25f, -0.75f};
  auto b = DecodeSessionAudio(Bytes(f32, sizeof(f32)), lipsync::v1::SAMPLE_FORMAT_F32LE);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<float>{0.25f, -0.75f}));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(DecodeSessionAudio(Bytes(&inf, 4), lipsync::v1::SAMPLE_FORMAT_F32LE).status().code(),
            StatusCode::kInvalidArgument);
  const std::string too_long((kMaxSessionChunkSamples + 1) * 2, '\0');
  EXPECT_EQ(DecodeSessionAudio(too_long, lipsync::v1::SAMPLE_FORMAT_S16LE).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync::server
