// The lip-sync stream on its own: how it cuts frames into batches on the scheduler, the order and
// time stamps of what comes out, a failing frame source, and a stop with batches still queued.
// (Its frames against the engine called directly: render_test.cc; against a session's: the
// server's session tests.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "avatar_test_util.h"
#include "lipsync/memory.h"
#include "pipeline/stream/lipsync_stream.h"
#include "pipeline/stream/stored_frames.h"

namespace lipsync::stream {
namespace {

using testing::ImportTinyAvatar;
using testing::ScratchDir;

std::vector<float> Tone(double seconds) {
  std::vector<float> pcm(static_cast<size_t>(seconds * kAudioSampleRate));
  for (size_t i = 0; i < pcm.size(); ++i) {
    pcm[i] = 0.4f * static_cast<float>(std::sin(0.05 * i + 1e-6 * i * i));
  }
  return pcm;
}

// The tiny avatar's models on a scheduler of their own.
struct Models {
  ScratchDir dir;
  Avatar avatar = ImportTinyAvatar(dir);
  std::unique_ptr<Engine> unet = Engine::Create(avatar.model_path()).value();
  std::unique_ptr<AudioEncoder> encoder = AudioEncoder::Create(avatar.audio_encoder_path()).value();
  UnetInputs roles = FindUnetInputs(unet->info()).value();
  FaceLayout layout = FaceLayout::ForInputSize(roles.size).value();
  runtime::Scheduler scheduler{runtime::SchedulerOptions{}};
  std::shared_ptr<runtime::ScheduledModel> model;
  FrameSequence sequence =
      FrameSequence::Create(avatar.frame_count(), FrameOrder::kPingPong).value();

  explicit Models(int batch) {
    runtime::ModelConfig config;
    config.name = "tiny";
    config.max_batch = batch;
    config.layout = layout;
    config.visual_input = static_cast<int>(roles.visual);
    config.audio_input = static_cast<int>(roles.audio);
    model = scheduler.AddModel(unet.get(), config);
  }

  StreamOptions Offline(int batch) const {
    StreamOptions options;
    options.fps = avatar.manifest().fps;
    options.batch = batch;
    options.origin = runtime::Origin::kRender;
    options.max_batches = 3;
    return options;
  }
};

// Frames kept for reuse, none decoded ahead.
CachedFramesOptions KeepFrames() {
  CachedFramesOptions options;
  options.cache_bytes = 64 << 20;
  return options;
}

// A source that fails at one frame.
class BrokenAt final : public FrameSource {
 public:
  BrokenAt(FrameSource& frames, int64_t broken) : frames_(frames), broken_(broken) {}
  Result<SourceFrame> Read(int64_t index) override {
    if (++reads_ > broken_) return DataLoss("frame file " + std::to_string(index) + " is broken");
    return frames_.Read(index);
  }

 private:
  FrameSource& frames_;
  int64_t broken_;
  int64_t reads_ = 0;
};

TEST(LipSyncStream, OfflineStreamRunsFullBatchesAndGivesTheFramesInOrder) {
  constexpr int kBatch = 3;
  Models m(kBatch);
  auto frames = CachedFrames::Open(m.avatar, m.layout, KeepFrames());
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  LipSyncStream s(m.scheduler, m.model, *m.encoder, **frames, m.sequence, m.layout,
                  m.Offline(kBatch));
  const auto pcm = Tone(1.3);
  for (size_t at = 0; at < pcm.size(); at += 1000) {  // chunks that do not fall on frames
    ASSERT_TRUE(s.Push(pcm.data() + at, std::min<size_t>(1000, pcm.size() - at)).ok());
    // Offline, only full batches go: what is prepared but not yet a batch waits.
    while (s.Prepare(false).value()) {
    }
  }
  ASSERT_TRUE(s.Finish().ok());
  const int64_t total = s.frames_total();
  ASSERT_GT(total, 2 * kBatch);
  ASSERT_NE(total % kBatch, 0) << "the test wants a short last batch";
  std::vector<StreamFrame> got;
  for (;;) {
    ASSERT_TRUE(s.PrepareWaiting().ok());
    auto frame = s.Next();
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    if (!*frame) break;
    got.push_back(std::move(**frame));
  }
  ASSERT_EQ(static_cast<int64_t>(got.size()), total);
  for (int64_t i = 0; i < total; ++i) {
    const StreamFrame& f = got[static_cast<size_t>(i)];
    EXPECT_EQ(f.index, i);
    EXPECT_DOUBLE_EQ(f.pts_s, static_cast<double>(i) / m.avatar.manifest().fps);
    EXPECT_EQ(f.avatar_frame, m.sequence(i));
    EXPECT_EQ(f.frame.width, m.avatar.width());
  }
  // Every batch full but the last.
  const runtime::SchedulerTotals totals = m.scheduler.totals();
  EXPECT_EQ(totals.batches, (total + kBatch - 1) / kBatch);
  EXPECT_EQ(totals.rows_by_origin[static_cast<size_t>(runtime::Origin::kRender)], total);
  EXPECT_EQ(s.stats().batches, totals.batches);
  EXPECT_EQ(s.stats().paste.items, total);
}

TEST(LipSyncStream, AFailingFrameSourceStopsTheStreamWithItsError) {
  Models m(2);
  auto frames = CachedFrames::Open(m.avatar, m.layout, KeepFrames());
  ASSERT_TRUE(frames.ok());
  BrokenAt broken(**frames, 5);
  LipSyncStream s(m.scheduler, m.model, *m.encoder, broken, m.sequence, m.layout, m.Offline(2));
  const auto pcm = Tone(1.0);
  ASSERT_TRUE(s.Push(pcm.data(), pcm.size()).ok());
  ASSERT_TRUE(s.Finish().ok());
  Status failed;
  for (int frames_out = 0; failed.ok(); ++frames_out) {
    ASSERT_LT(frames_out, 5) << "frames past the broken one came out";
    auto prepared = s.PrepareWaiting();
    if (!prepared.ok()) {
      failed = prepared;
      break;
    }
    auto frame = s.Next();
    if (!frame.ok()) failed = frame.status();
  }
  EXPECT_EQ(failed.code(), StatusCode::kDataLoss) << failed.ToString();
  EXPECT_NE(failed.message().find("frame file"), std::string::npos) << failed.ToString();
  // Every later call gives the same error.
  EXPECT_EQ(s.Next().status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(s.Push(pcm.data(), 100).code(), StatusCode::kDataLoss);
}

// A caller that makes the model's inputs itself (the monolithic service) pushes them: the model
// runs on exactly those, and the paste the caller chose puts the faces in. Several threads take
// the frames at once, each frame once. Copied, the faces may be one byte off float alignment, as
// a request's bytes may be; read in place, the model reads the caller's bytes when the batch runs
// (the caller's change after Prepare, while the scheduler is paused, shows in the frames).
class GivenInputs : public ::testing::TestWithParam<bool> {};

TEST_P(GivenInputs, RunAsGivenAndSeveralThreadsTakeEachFrameOnce) {
  const bool in_place = GetParam();
  constexpr int kBatch = 3, kFrames = 7, kThreads = 3;
  Models m(kBatch);
  const int s = m.layout.inner_size;
  auto reader = m.avatar.OpenFrames();
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::vector<Image> images;
  for (int64_t i = 0; i < m.avatar.frame_count(); ++i) images.push_back((*reader)->Read(i).value());
  const FrameStore store = FrameStore::Decoded(std::move(images));
  StoredFrames frames(store, m.avatar.crop_rects(), m.layout,
                      StoredFramesOptions::WithoutCrops());  // not needed

  std::mt19937 random(7);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {kFrames, 32, 16, 16});
  for (int64_t i = 0; i < windows.element_count(); ++i) windows.data_as<float>()[i] = value(random);
  const size_t face_values = static_cast<size_t>(6) * s * s;
  const size_t visual_bytes = kFrames * face_values * sizeof(float);
  std::vector<float> visual(kFrames * face_values), changed(visual.size());
  for (float& v : visual) v = value(random);
  for (float& v : changed) v = value(random);
  std::vector<uint8_t> given_bytes(visual_bytes + sizeof(float));
  uint8_t* given = given_bytes.data() + (in_place ? sizeof(float) : 1);
  std::memcpy(given, visual.data(), visual_bytes);

  StreamOptions options = m.Offline(kBatch);
  options.frame_form = false;
  options.visual_in_place = in_place;
  // The face in place of the frame (the tiny avatar's frames are smaller than its faces).
  options.paste = [s](const uint8_t* face, const SourceFrame&, Image& frame) {
    frame = Image{s, s, std::vector<uint8_t>(face, face + static_cast<size_t>(s) * s * 3)};
    return Status::Ok();
  };
  LipSyncStream stream(m.scheduler, m.model, *m.encoder, frames, m.sequence, m.layout, options);
  if (in_place) {  // float-aligned only
    ASSERT_EQ(stream.PushInputs(windows, given + 1).code(), StatusCode::kInvalidArgument);
  }
  ASSERT_TRUE(stream.PushInputs(windows, given).ok());
  if (in_place) {  // and once
    ASSERT_EQ(stream.PushInputs(windows, given).code(), StatusCode::kFailedPrecondition);
  }
  ASSERT_TRUE(stream.Finish().ok());
  EXPECT_EQ(stream.frames_total(), kFrames);
  const auto pcm = Tone(0.1);
  EXPECT_EQ(stream.Push(pcm.data(), pcm.size()).code(), StatusCode::kFailedPrecondition);
  m.scheduler.Pause();
  while (stream.Prepare(true).value()) {
  }
  std::memcpy(given, changed.data(), visual_bytes);
  m.scheduler.Resume();
  const std::vector<float>& ran_on = in_place ? changed : visual;

  std::mutex mu;
  std::vector<StreamFrame> got;
  std::vector<std::thread> takers;
  for (int t = 0; t < kThreads; ++t) {
    takers.emplace_back([&] {
      for (;;) {
        auto frame = stream.Next();
        ASSERT_TRUE(frame.ok()) << frame.status().ToString();
        if (!*frame) return;
        std::lock_guard lock(mu);
        got.push_back(std::move(**frame));
      }
    });
  }
  for (auto& taker : takers) taker.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kFrames));
  std::sort(got.begin(), got.end(), [](auto& a, auto& b) { return a.index < b.index; });

  // Each frame against the model run on its own inputs, directly.
  const UnetInputs roles = m.roles;
  Shape audio_shape = m.unet->info().inputs[roles.audio].shape;
  audio_shape[0] = 1;
  std::vector<float> out(static_cast<size_t>(3) * s * s);
  std::vector<uint8_t> face(static_cast<size_t>(3) * s * s);
  for (int i = 0; i < kFrames; ++i) {
    const StreamFrame& f = got[static_cast<size_t>(i)];
    ASSERT_EQ(f.index, i);
    EXPECT_EQ(f.avatar_frame, m.sequence(i));
    std::vector<TensorView> inputs(2);
    inputs[roles.visual] = {DataType::kFloat32, {1, 6, s, s}, ran_on.data() + i * face_values};
    inputs[roles.audio] = {DataType::kFloat32, audio_shape,
                           windows.data_as<float>() + static_cast<size_t>(i) * kAudioWindowValues};
    ASSERT_TRUE(m.unet->Run(inputs, {{DataType::kFloat32, {1, 3, s, s}, out.data()}}).ok());
    OutputToImage(out.data(), s, face.data());
    EXPECT_EQ(f.frame.width, s);
    EXPECT_TRUE(f.frame.bgr == face) << "frame " << i << " differs";
  }
}

INSTANTIATE_TEST_SUITE_P(LipSyncStream, GivenInputs, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "InPlace" : "Copied"; });

// Faces given to a stream that leaves the crops to paste time (the monolithic service) go into the
// crop the frame store keeps, where it keeps one: the same frames as with the crop cut then, and
// other frames for other crops.
TEST(LipSyncStream, GivenFacesArePastedIntoTheCropsTheStoreKeeps) {
  constexpr int kBatch = 3, kFrames = 5;
  Models m(kBatch);
  const int s = m.layout.inner_size;
  auto reader = m.avatar.OpenFrames();
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::vector<Image> images, crops, marked;
  for (int64_t i = 0; i < m.avatar.frame_count(); ++i) {
    images.push_back((*reader)->Read(i).value());
    crops.push_back(
        CropFace(images.back(), m.avatar.crop_rects()[static_cast<size_t>(i)], m.layout).value());
    marked.push_back(crops.back());
    std::fill(marked.back().bgr.begin(), marked.back().bgr.end(), static_cast<uint8_t>(40 + 9 * i));
  }
  std::mt19937 random(11);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  Tensor windows = Tensor::Uninitialized(DataType::kFloat32, {kFrames, 32, 16, 16});
  for (int64_t i = 0; i < windows.element_count(); ++i) windows.data_as<float>()[i] = value(random);
  std::vector<float> visual(static_cast<size_t>(kFrames) * 6 * s * s);
  for (float& v : visual) v = value(random);

  const auto run = [&](const FrameStore& store) {
    StoredFrames frames(store, m.avatar.crop_rects(), m.layout,
                        StoredFramesOptions::WithoutCrops());
    StreamOptions options = m.Offline(kBatch);
    options.frame_form = false;
    LipSyncStream stream(m.scheduler, m.model, *m.encoder, frames, m.sequence, m.layout, options);
    EXPECT_TRUE(stream.PushInputs(windows, visual.data()).ok());
    EXPECT_TRUE(stream.Finish().ok());
    for (;;) {
      auto prepared = stream.Prepare(true);
      EXPECT_TRUE(prepared.ok()) << prepared.status().ToString();
      if (!prepared.ok() || !*prepared) break;
    }
    std::vector<Image> out;
    for (;;) {
      auto frame = stream.Next();
      if (!frame.ok() || !*frame) {
        EXPECT_TRUE(frame.ok()) << frame.status().ToString();
        return out;
      }
      out.push_back(std::move((*frame)->frame));
    }
  };
  const std::vector<Image> cut = run(FrameStore::Decoded(images));
  const std::vector<Image> kept = run(FrameStore::Decoded(images, crops));
  const std::vector<Image> other = run(FrameStore::Decoded(images, marked));
  ASSERT_EQ(cut.size(), static_cast<size_t>(kFrames));
  ASSERT_EQ(kept.size(), cut.size());
  ASSERT_EQ(other.size(), cut.size());
  for (size_t i = 0; i < cut.size(); ++i) {
    EXPECT_TRUE(kept[i].bgr == cut[i].bgr) << "frame " << i << " differs with its crop kept";
    EXPECT_FALSE(other[i].bgr == cut[i].bgr) << "frame " << i << " ignores the crop kept";
  }
}

// A stream that cuts the faces itself needs the crops.
TEST(LipSyncStream, AStreamThatCutsTheFacesNeedsTheCrops) {
  constexpr int kBatch = 3;
  Models m(kBatch);
  auto reader = m.avatar.OpenFrames();
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::vector<Image> images;
  for (int64_t i = 0; i < m.avatar.frame_count(); ++i) images.push_back((*reader)->Read(i).value());
  const FrameStore store = FrameStore::Decoded(std::move(images));
  StoredFrames frames(store, m.avatar.crop_rects(), m.layout, StoredFramesOptions::WithoutCrops());
  LipSyncStream cropless(m.scheduler, m.model, *m.encoder, frames, m.sequence, m.layout,
                         m.Offline(kBatch));
  const auto speech = Tone(0.6);
  ASSERT_TRUE(cropless.Push(speech.data(), speech.size()).ok());
  ASSERT_TRUE(cropless.Finish().ok()) << cropless.Finish().ToString();
  auto prepared = cropless.Prepare(true);
  EXPECT_EQ(prepared.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(prepared.status().message().find("without its crop"), std::string::npos);
}

// A batch still queued when the stream's deadline passes does not run: the stream fails with
// kDeadlineExceeded (here the deadline has passed before the first batch is queued).
TEST(LipSyncStream, ABatchPastTheDeadlineDoesNotRun) {
  Models m(2);
  auto frames = CachedFrames::Open(m.avatar, m.layout, KeepFrames());
  ASSERT_TRUE(frames.ok());
  StreamOptions options = m.Offline(2);
  options.deadline = runtime::SchedulerClock::now();
  LipSyncStream s(m.scheduler, m.model, *m.encoder, **frames, m.sequence, m.layout, options);
  const auto pcm = Tone(0.6);
  ASSERT_TRUE(s.Push(pcm.data(), pcm.size()).ok());
  ASSERT_TRUE(s.Finish().ok());
  ASSERT_TRUE(s.PrepareWaiting().ok());
  auto next = s.Next();
  EXPECT_EQ(next.status().code(), StatusCode::kDeadlineExceeded) << next.status().ToString();
  EXPECT_EQ(m.scheduler.totals().batches, 0);
}

// A stop drops the batches still queued on the scheduler; the one running finishes, and the
// stream's destruction waits for it.
TEST(LipSyncStream, AStopDropsTheQueuedBatches) {
  Models m(2);
  auto frames = CachedFrames::Open(m.avatar, m.layout, KeepFrames());
  ASSERT_TRUE(frames.ok());
  std::promise<void> taken, release;
  auto released = release.get_future().share();
  std::atomic<int> batches{0};
  m.scheduler.SetBatchObserver([&, released](const runtime::BatchRecord&) {
    if (batches++ == 0) {
      taken.set_value();
      released.wait();
    }
  });
  // Every batch's end, run or dropped.
  std::atomic<int> ended{0};
  std::promise<void> all_ended;
  StreamOptions options = m.Offline(2);
  options.on_batch_done = [&] {
    if (++ended == 3) all_ended.set_value();
  };
  auto s = std::make_unique<LipSyncStream>(m.scheduler, m.model, *m.encoder, **frames, m.sequence,
                                           m.layout, options);
  const auto pcm = Tone(1.0);
  ASSERT_TRUE(s->Push(pcm.data(), pcm.size()).ok());
  ASSERT_TRUE(s->Prepare(false).value());
  ASSERT_TRUE(s->Prepare(false).value());  // full: the first batch goes
  taken.get_future().wait();               // and the worker holds it
  ASSERT_TRUE(s->PrepareWaiting().ok());   // two more queued behind it
  ASSERT_EQ(s->batches_open(), 3);
  s->Stop(Status(StatusCode::kCancelled, "the client left"));
  release.set_value();
  all_ended.get_future().wait();
  auto next = s->Next();
  EXPECT_EQ(next.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(next.status().message(), "the client left");
  s.reset();
  EXPECT_EQ(batches.load(), 1) << "a queued batch ran after the stop";
  EXPECT_EQ(m.scheduler.totals().rows_by_origin[static_cast<size_t>(runtime::Origin::kRender)], 2);
  m.scheduler.SetBatchObserver(nullptr);
}

// A batch's buffers come from the host working-memory pool: counted while the stream holds them,
// given back with it, and refused past the pool's limit with a clear error.
TEST(LipSyncStream, BatchesTakeTheirMemoryFromTheHostPoolWithinItsLimit) {
  Models m(2);
  auto frames = CachedFrames::Open(m.avatar, m.layout, KeepFrames());
  ASSERT_TRUE(frames.ok());
  struct NoLimitAtEnd {
    ~NoLimitAtEnd() { HostMemory().SetLimit(0); }
  } no_limit_at_end;
  const auto pcm = Tone(0.6);
  const int64_t s = m.layout.inner_size;
  const int64_t batch_bytes = 2 * (2 * s * s * 3 + kAudioWindowValues * 4);  // faces in and out
  {
    const int64_t before = HostMemory().stats().working_in_use;
    LipSyncStream stream(m.scheduler, m.model, *m.encoder, **frames, m.sequence, m.layout,
                         m.Offline(2));
    ASSERT_TRUE(stream.Push(pcm.data(), pcm.size()).ok());
    ASSERT_TRUE(stream.Prepare(false).value());  // the first frame of a batch of two: not yet run
    EXPECT_GE(HostMemory().stats().working_in_use - before, batch_bytes);
  }
  const int64_t in_use = HostMemory().stats().working_in_use;
  HostMemory().SetLimit(in_use + 4096);  // less than one batch
  LipSyncStream refused(m.scheduler, m.model, *m.encoder, **frames, m.sequence, m.layout,
                        m.Offline(2));
  ASSERT_TRUE(refused.Push(pcm.data(), pcm.size()).ok());
  auto prepared = refused.Prepare(false);
  EXPECT_EQ(prepared.status().code(), StatusCode::kResourceExhausted)
      << prepared.status().ToString();
  EXPECT_NE(prepared.status().message().find("host memory limit"), std::string::npos);
  EXPECT_EQ(refused.Next().status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(HostMemory().stats().working_in_use, in_use);
}

}  // namespace
}  // namespace lipsync::stream
