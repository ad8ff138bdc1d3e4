// The avatar repository: LRU eviction within the model cap and the memory budgets, leases that
// keep an avatar from eviction, load/unload storms from several threads with the invariants
// checked after every operation, YAML configs (lipsync's and the Go server's) and their errors.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <thread>

#include "avatar_test_util.h"
#include "core/arena_pool.h"
#include "lipsync/frames.h"
#include "lipsync/video.h"
#include "server/core/avatar_registry.h"
#include "test_avatars.h"

namespace lipsync::server {
namespace {

using lipsync::testing::FixturePath;
using lipsync::testing::ScratchDir;
using lipsync::testing::TestModelPath;
using lipsync::testing::WriteFile;
using testing::StateOf;
using testing::TestRegistryOptions;
using testing::WriteTestAvatar;

// A decoded frame's face crop, kept beside it: 328 x 328 BGR for the 320 model.
constexpr int64_t kCropBytes = int64_t{328} * 328 * 3;

#define EXPECT_MESSAGE(status, text)                          \
  EXPECT_NE((status).message().find(text), std::string::npos) \
      << "message: " << (status).message() << "\nexpected to contain: " << (text)

// Host bytes of one test avatar as the registry counts them (all test avatars are alike): its own
// (frames and UNet) and its audio encoder's, which the test avatars share and which counts once.
struct AvatarBytes {
  int64_t own = 0, encoder = 0;
};
AvatarBytes BytesOfTestAvatar(const std::string& root, const std::string& id = "a0") {
  AvatarRegistry registry(TestRegistryOptions(root));
  auto a = registry.Load(id);
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  if (!a.ok()) return {};
  EXPECT_GT((*a)->memory_bytes, 0);
  EXPECT_GT((*a)->encoder_host_bytes, 0);
  return {(*a)->memory_bytes, (*a)->encoder_host_bytes};
}

// Replaces the audio encoder of the avatar folder `dir` (enc.onnx) with `model`, and its external
// data file when it has one.
void UseEncoder(const std::string& dir, const std::string& model, const std::string& data = "") {
  const auto overwrite = std::filesystem::copy_options::overwrite_existing;
  std::filesystem::copy_file(model, dir + "/enc.onnx", overwrite);
  if (!data.empty()) std::filesystem::copy_file(data, dir + "/enc.onnx.data", overwrite);
}

// The invariants that hold after every operation: within the cap and the budgets, and the
// counts of loads, unloads and evictions agree with what is loaded.
void ExpectConsistent(const AvatarRegistry& registry) {
  const AvatarUsage usage = registry.Usage();
  EXPECT_LE(usage.loaded, registry.max_models());
  if (registry.max_host_bytes() > 0) {
    EXPECT_LE(usage.host_bytes, registry.max_host_bytes());
  }
  for (const AvatarState& s : registry.States()) {
    EXPECT_EQ(s.loads - s.unloads - s.evictions, s.loaded ? 1 : 0) << s.id;
  }
}

TEST(AvatarRepository, EvictsTheLeastRecentlyUsedWithinTheHostBudget) {
  ScratchDir root;
  for (const char* id : {"a0", "a1", "a2", "a3"}) WriteTestAvatar(root.path(), id);
  const AvatarBytes b = BytesOfTestAvatar(root.path());
  ASSERT_GT(b.own, 0);
  auto options = TestRegistryOptions(root.path());
  options.max_host_bytes = b.encoder + 2 * b.own + b.own / 2;  // two fit, three do not
  AvatarRegistry registry(options);
  ASSERT_TRUE(registry.Load("a0").ok());
  ASSERT_TRUE(registry.Load("a1").ok());
  ASSERT_NE(registry.Find("a0"), nullptr);  // a0 is now the more recently used
  ASSERT_TRUE(registry.Load("a2").ok());    // evicts a1
  EXPECT_EQ(registry.Find("a1"), nullptr);
  EXPECT_NE(registry.Find("a0"), nullptr);  // used again: a2 is now the least recent
  ASSERT_TRUE(registry.Load("a3").ok());    // evicts a2
  EXPECT_EQ(registry.Find("a2"), nullptr);
  EXPECT_NE(registry.Find("a0"), nullptr);
  EXPECT_NE(registry.Find("a3"), nullptr);
  ExpectConsistent(registry);
  ASSERT_EQ(registry.States().size(), 4u);
  for (const AvatarState& s : registry.States()) {
    EXPECT_EQ(s.evictions, s.id == "a1" || s.id == "a2" ? 1 : 0) << s.id;
  }
  EXPECT_EQ(StateOf(registry.States(), "a1").reason, "evicted");
  EXPECT_EQ(registry.Usage().host_bytes, b.encoder + 2 * b.own);
}

TEST(AvatarRepository, EvictsTheLeastRecentlyUsedAtTheModelCap) {
  ScratchDir root;
  for (const char* id : {"a0", "a1", "a2"}) WriteTestAvatar(root.path(), id);
  auto options = TestRegistryOptions(root.path());
  options.max_models = 2;
  AvatarRegistry registry(options);
  ASSERT_TRUE(registry.Load("a0").ok());
  ASSERT_TRUE(registry.Load("a1").ok());
  ASSERT_NE(registry.Find("a0"), nullptr);
  EXPECT_EQ(registry.Loaded().size(), 2u);  // listing is not a use: a1 stays the least recent
  ASSERT_TRUE(registry.Load("a2").ok());
  EXPECT_EQ(registry.Find("a1"), nullptr);
  EXPECT_NE(registry.Find("a0"), nullptr);
  ExpectConsistent(registry);
}

TEST(AvatarRepository, APinnedAvatarIsNotEvictedAndTheLoadFailsClearly) {
  ScratchDir root;
  for (const char* id : {"a0", "a1"}) WriteTestAvatar(root.path(), id);
  const AvatarBytes b = BytesOfTestAvatar(root.path());
  auto options = TestRegistryOptions(root.path());
  options.max_host_bytes = b.encoder + b.own + b.own / 2;
  AvatarRegistry registry(options);
  auto lease = registry.Load("a0");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ((*lease)->pins.load(), 1);
  auto refused = registry.Load("a1");
  ASSERT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_MESSAGE(refused.status(), "host memory budget");
  EXPECT_MESSAGE(refused.status(), "in use (a0)");
  EXPECT_EQ(registry.Find("a0").get(), lease->get());  // still loaded, the same object
  ExpectConsistent(registry);

  // Unloaded while leased, its memory still counts until the lease goes.
  ASSERT_TRUE(registry.Unload("a0").ok());
  EXPECT_EQ(registry.Find("a0"), nullptr);
  auto still = registry.Load("a1");
  ASSERT_EQ(still.status().code(), StatusCode::kResourceExhausted);
  EXPECT_MESSAGE(still.status(), "unloaded avatars still in use");
  EXPECT_EQ(registry.Usage().host_bytes, b.encoder + b.own);
  lease->reset();
  EXPECT_EQ(registry.Usage().host_bytes, 0);
  ASSERT_TRUE(registry.Load("a1").ok());
  ExpectConsistent(registry);
}

// Copies of a lease share one pin; the pin goes with the last copy.
TEST(AvatarRepository, LeaseCopiesShareOnePin) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "a0");
  AvatarRegistry registry(TestRegistryOptions(root.path()));
  auto lease = registry.Load("a0");
  ASSERT_TRUE(lease.ok());
  auto copy = *lease;
  auto second = registry.Find("a0");
  EXPECT_EQ(second->pins.load(), 2);
  lease->reset();
  EXPECT_EQ(second->pins.load(), 2);  // `copy` still holds the first lease
  copy.reset();
  EXPECT_EQ(second->pins.load(), 1);
  EXPECT_EQ(registry.States()[0].pins, 1);
}

// Request threads lease avatars of one set and check, while they hold one, that it stays loaded
// as the same object; an admin thread loads and unloads a second set; every thread checks the
// cap and the budget after each operation. The budget lets three of nine avatars in.
TEST(AvatarRepository, LoadUnloadStormsKeepTheInvariants) {
  ScratchDir root;
  const std::vector<std::string> requested = {"r0", "r1", "r2", "r3", "r4"};
  const std::vector<std::string> managed = {"m0", "m1", "m2", "m3"};
  for (const auto& id : requested) WriteTestAvatar(root.path(), id, 2);
  for (const auto& id : managed) WriteTestAvatar(root.path(), id, 2);
  auto options = TestRegistryOptions(root.path());
  const AvatarBytes b = BytesOfTestAvatar(root.path(), "r0");
  options.max_models = 4;
  options.max_host_bytes = b.encoder + 3 * b.own + b.own / 2;
  AvatarRegistry registry(options);

  std::atomic<int64_t> served{0}, refused{0};
  std::atomic<bool> failed{false};
  auto check = [&] {
    const AvatarUsage u = registry.Usage();
    if (u.loaded > registry.max_models() || u.host_bytes > registry.max_host_bytes()) {
      failed = true;
    }
  };
  auto request_loop = [&](uint32_t seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < 40 && !failed; ++i) {
      const std::string& id = requested[rng() % requested.size()];
      auto lease = registry.Load(id);
      check();
      if (!lease.ok()) {
        // Only a full registry of pinned avatars may refuse.
        if (lease.status().code() != StatusCode::kResourceExhausted) failed = true;
        ++refused;
        continue;
      }
      for (int k = 0; k < 3; ++k) {
        std::this_thread::yield();
        if (registry.Find(id).get() != lease->get()) failed = true;  // evicted while in use
        if ((*lease)->frames.size() != 2 || !(*lease)->unet) failed = true;
      }
      (*lease)->RecordRequest(1.0);
      ++served;
    }
  };
  auto admin_loop = [&] {
    std::mt19937 rng(99);
    for (int i = 0; i < 40 && !failed; ++i) {
      const std::string& id = managed[rng() % managed.size()];
      if (rng() % 2) {
        auto loaded = registry.Load(id);
        if (!loaded.ok() && loaded.status().code() != StatusCode::kResourceExhausted) {
          failed = true;
        }
      } else {
        Status unloaded = registry.Unload(id);
        if (!unloaded.ok() && unloaded.code() != StatusCode::kNotFound) failed = true;
      }
      check();
    }
  };
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < 3; ++t) threads.emplace_back(request_loop, t + 1);
  threads.emplace_back(admin_loop);
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  EXPECT_GT(served.load(), 0);
  ExpectConsistent(registry);
  int64_t requests = 0, host = 0;
  for (const AvatarState& s : registry.States()) {
    EXPECT_EQ(s.pins, 0) << s.id;
    requests += s.total_requests;
    host += s.host_bytes;
  }
  EXPECT_EQ(requests, served.load());
  // Nothing retired or reserved is left; the avatars still loaded share one encoder.
  const AvatarUsage left = registry.Usage();
  EXPECT_EQ(left.encoders, left.loaded > 0 ? 1 : 0);
  EXPECT_EQ(left.host_bytes, host + (left.loaded > 0 ? b.encoder : 0));
}

// Avatars whose encoders are the same model (copies of one file) hold one engine, counted once
// against the budget; an avatar with another encoder has its own. The shared engine serves on
// when one of its avatars goes, and goes with the last.
TEST(AvatarRepository, AvatarsWithTheSameEncoderModelShareOneEngineCountedOnce) {
  ScratchDir root;
  for (const char* id : {"a0", "a1", "other"}) WriteTestAvatar(root.path(), id);
  UseEncoder(root.path() + "/other", TestModelPath("tiny_audio_encoder_fixed4.onnx"));
  const AvatarBytes b = BytesOfTestAvatar(root.path());
  const AvatarBytes other = BytesOfTestAvatar(root.path(), "other");
  auto options = TestRegistryOptions(root.path());
  // Both a0 and a1 fit only when their encoder counts once.
  options.max_host_bytes = b.encoder + other.encoder + 3 * b.own + b.own / 2;
  ASSERT_LT(options.max_host_bytes, 2 * b.encoder + other.encoder + 3 * b.own);
  AvatarRegistry registry(options);
  auto a0 = registry.Load("a0");
  auto a1 = registry.Load("a1");
  auto o = registry.Load("other");
  ASSERT_TRUE(a0.ok() && a1.ok() && o.ok());
  EXPECT_EQ((*a0)->encoder.get(), (*a1)->encoder.get());
  EXPECT_NE((*a0)->encoder.get(), (*o)->encoder.get());
  AvatarUsage u = registry.Usage();
  EXPECT_EQ(u.loaded, 3);
  EXPECT_EQ(u.encoders, 2);
  EXPECT_EQ(u.host_bytes, b.encoder + other.encoder + 3 * b.own);
  for (const AvatarState& s : registry.States()) EXPECT_EQ(s.evictions, 0) << s.id;
  std::string metrics;
  registry.RenderPrometheus(&metrics);
  EXPECT_NE(metrics.find("lipsync_audio_encoders_loaded 2\n"), std::string::npos) << metrics;

  const std::weak_ptr<AudioEncoder> shared = (*a0)->encoder;
  a0->reset();
  ASSERT_TRUE(registry.Unload("a0").ok());
  ASSERT_FALSE(shared.expired());  // a1 holds it
  Tensor windows(DataType::kFloat32, {1, 1, 80, 16});
  auto encoded = (*a1)->encoder->Encode(windows);
  ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
  EXPECT_EQ(encoded->shape(), (Shape{1, 512}));
  EXPECT_EQ(registry.Usage().host_bytes, b.encoder + other.encoder + 2 * b.own);

  a1->reset();
  ASSERT_TRUE(registry.Unload("a1").ok());
  EXPECT_TRUE(shared.expired());
  u = registry.Usage();
  EXPECT_EQ(u.encoders, 1);
  EXPECT_EQ(u.host_bytes, other.encoder + b.own);
  ExpectConsistent(registry);
}

// An encoder's external data is part of the model: the same model file beside other weights is
// another encoder, and the data file counts in the avatar's memory.
TEST(AvatarRepository, EncodersWithExternalDataAreSharedOnlyWithTheSameData) {
  const std::string model = TestModelPath("tiny_audio_encoder_external/enc.onnx");
  const std::string data = model + ".data";
  ScratchDir root, scratch;
  for (const char* id : {"e0", "e1", "changed"}) {
    WriteTestAvatar(root.path(), id);
    UseEncoder(root.path() + "/" + id, model, data);
  }
  // The same weights but one bias value.
  std::string bytes = lipsync::testing::ReadFile(data);
  ASSERT_GT(bytes.size(), 4u);
  bytes[bytes.size() - 2] = static_cast<char>(bytes[bytes.size() - 2] ^ 0x40);
  WriteFile(root.path() + "/changed/enc.onnx.data", bytes);

  AvatarRegistry registry(TestRegistryOptions(root.path()));
  auto e0 = registry.Load("e0");
  auto e1 = registry.Load("e1");
  auto changed = registry.Load("changed");
  ASSERT_TRUE(e0.ok()) << e0.status().ToString();
  ASSERT_TRUE(e1.ok() && changed.ok());
  EXPECT_EQ((*e0)->encoder.get(), (*e1)->encoder.get());
  EXPECT_NE((*e0)->encoder.get(), (*changed)->encoder.get());
  EXPECT_EQ((*e0)->encoder_host_bytes, static_cast<int64_t>(std::filesystem::file_size(model) +
                                                            std::filesystem::file_size(data)));
  EXPECT_EQ(registry.Usage().encoders, 2);
}

TEST(AvatarRepository, UnknownAndCorruptAvatarsFailAndTheRestServes) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "good");
  WriteTestAvatar(root.path(), "corrupt");
  WriteFile(root / "corrupt/crop_rects.json", "[[1, 2, 3");
  AvatarRegistry registry(TestRegistryOptions(root.path()));
  auto unknown = registry.Load("nobody");
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_MESSAGE(unknown.status(), "unknown model 'nobody'");
  EXPECT_EQ(registry.Load("../good").status().code(), StatusCode::kInvalidArgument);
  auto corrupt = registry.Load("corrupt");
  ASSERT_FALSE(corrupt.ok());
  EXPECT_MESSAGE(corrupt.status(), "crop_rects.json");
  ASSERT_TRUE(registry.Load("good").ok());
  const AvatarState corrupt_state = StateOf(registry.States(), "corrupt");
  EXPECT_EQ(corrupt_state.load_failures, 1);
  EXPECT_NE(corrupt_state.reason.find("crop_rects.json"), std::string::npos)
      << corrupt_state.reason;
  for (const AvatarState& s : registry.States()) EXPECT_NE(s.id, "nobody");
}

// An avatar loaded with a warm-up runs its UNet once at each batch size up to it, through the
// scheduler, before it serves; on the CPU the automatic setting warms nothing.
TEST(AvatarRepository, AWarmUpRunsEachBatchSizeOnceAsTheAvatarLoads) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "warm");
  WriteTestAvatar(root.path(), "cold");
  AvatarRegistryOptions options = TestRegistryOptions(root.path());
  options.warmup_batch = 3;
  AvatarRegistry warm_registry(options);
  auto warm = warm_registry.Load("warm");
  ASSERT_TRUE(warm.ok()) << warm.status().ToString();
  EXPECT_EQ((*warm)->warmed_batch, 3);
  const runtime::SchedulerTotals totals = warm_registry.scheduler().totals();
  EXPECT_EQ(totals.rows_by_origin[static_cast<size_t>(runtime::Origin::kWarmup)], 1 + 2 + 3);
  EXPECT_EQ(totals.batches, 3);

  AvatarRegistry cold_registry(TestRegistryOptions(root.path()));  // automatic, on the CPU
  auto cold = cold_registry.Load("cold");
  ASSERT_TRUE(cold.ok()) << cold.status().ToString();
  EXPECT_EQ((*cold)->warmed_batch, 0);
  EXPECT_EQ(cold_registry.scheduler().totals().batches, 0);
  EXPECT_STREQ(runtime::OriginName(runtime::Origin::kWarmup), "warmup");
}

// An avatar's frames are read at load on every core, each into its place, decoded or kept encoded
// (the files' bytes, far fewer than their pixels); a frame that does not decode fails the load
// with the file's name either way, and the rest serves.
TEST(AvatarRepository, FramesLoadInOrderAndABrokenOneFailsTheLoad) {
  ScratchDir root;
  constexpr int kFrames = 24;
  WriteTestAvatar(root.path(), "many", kFrames, 224, 128);
  WriteTestAvatar(root.path(), "broken", kFrames, 224, 128);
  WriteFile(root / "broken/frames/000017.png", "not a picture");
  int64_t file_bytes = 0;
  for (int i = 0; i < kFrames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "many/frames/%06d.png", i);
    file_bytes += static_cast<int64_t>(std::filesystem::file_size(root / name));
  }
  for (auto storage : {stream::FrameStorage::kDecoded, stream::FrameStorage::kEncoded}) {
    SCOPED_TRACE(stream::FrameStorageName(storage));
    auto options = TestRegistryOptions(root.path());
    options.frames = storage;
    AvatarRegistry registry(options);
    auto broken = registry.Load("broken");
    ASSERT_FALSE(broken.ok());
    EXPECT_MESSAGE(broken.status(), "000017.png");
    EXPECT_MESSAGE(broken.status(), "loading avatar 'broken'");
    auto many = registry.Load("many");
    ASSERT_TRUE(many.ok()) << many.status().ToString();
    const stream::FrameStore& frames = (*many)->frames;
    ASSERT_EQ(frames.storage(), storage);
    ASSERT_EQ(frames.size(), kFrames);
    for (int i = 0; i < kFrames; ++i) {
      auto frame = frames.Copy(i);
      ASSERT_TRUE(frame.ok()) << frame.status().ToString();
      EXPECT_EQ(frame->bgr, lipsync::testing::PatternImage(224, 128, i).bgr) << "frame " << i;
    }
    // Decoded frames are kept with their face crops (328 x 328 for the 320 model).
    const int64_t decoded_bytes = int64_t{kFrames} * (224 * 128 * 3 + kCropBytes);
    EXPECT_EQ(frames.bytes(),
              storage == stream::FrameStorage::kDecoded ? decoded_bytes : file_bytes);
    // Each kept crop is the frame's own, as the frame would be cut when served.
    for (int i = 0; i < kFrames; ++i) {
      const Image* crop = frames.crop(i);
      ASSERT_EQ(crop != nullptr, storage == stream::FrameStorage::kDecoded) << "frame " << i;
      if (!crop) continue;
      auto want = CropFace(lipsync::testing::PatternImage(224, 128, i),
                           (*many)->avatar.crop_rects()[static_cast<size_t>(i)], (*many)->layout);
      ASSERT_TRUE(want.ok()) << want.status().ToString();
      EXPECT_EQ(crop->bgr, want->bgr) << "frame " << i;
    }
    EXPECT_EQ(
        (*many)->memory_bytes,
        frames.bytes() + static_cast<int64_t>(std::filesystem::file_size(root / "many/unet.onnx")));
    EXPECT_FALSE(frames.Copy(kFrames).ok());
  }
}

// An avatar whose decoded frames do not fit the host budget is refused with what its frames would
// take kept encoded; kept encoded, the same budget holds it.
TEST(AvatarRepository, ABudgetTooSmallForDecodedFramesSaysWhatEncodedWouldTake) {
  ScratchDir root;
  constexpr int kFrames = 40, kW = 320, kH = 240;
  WriteTestAvatar(root.path(), "wide", kFrames, kW, kH);
  int64_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(root / "wide/frames")) {
    files += static_cast<int64_t>(e.file_size());
  }
  const int64_t decoded = int64_t{kFrames} * (kW * kH * 3 + kCropBytes);  // 13.1 MB with crops
  ASSERT_LT(files * 2, decoded);  // the pattern frames compress
  const int64_t models = static_cast<int64_t>(std::filesystem::file_size(root / "wide/unet.onnx") +
                                              std::filesystem::file_size(root / "wide/enc.onnx"));
  auto options = TestRegistryOptions(root.path());
  options.max_host_bytes = models + files + (decoded - files) / 2;
  AvatarRegistry decoded_registry(options);
  auto refused = decoded_registry.Load("wide");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_MESSAGE(refused.status(),
                 fmt::format("its frames take {:.1f} MiB decoded and would take {:.1f} MiB kept "
                             "encoded",
                             decoded / 1048576.0, files / 1048576.0));
  options.frames = stream::FrameStorage::kEncoded;
  AvatarRegistry encoded_registry(options);
  auto held = encoded_registry.Load("wide");
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  EXPECT_EQ((*held)->frames.bytes(), files);
}

// A video avatar's frames kept encoded are PNG: lossless, so every frame decodes to the pixels
// the decoded store holds, in a part of their memory.
TEST(AvatarRepository, VideoFramesKeptEncodedGiveTheDecodedPixels) {
  ScratchDir root;
  constexpr int kFrames = 9, kW = 160, kH = 96;
  WriteTestAvatar(root.path(), "clip", kFrames, kW, kH);
  VideoWriterOptions vo;
  vo.width = kW;
  vo.height = kH;
  vo.audio = false;
  {
    auto writer = VideoWriter::Create(root / "clip/frames.mp4", vo);
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    for (int i = 0; i < kFrames; ++i) {
      ASSERT_TRUE((*writer)->WriteFrame(lipsync::testing::PatternImage(kW, kH, i)).ok());
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  std::filesystem::remove_all(root / "clip/frames");
  WriteFile(root / "clip/avatar.json",
            R"({"format": "lipsync-avatar", "version": 1, "name": "clip", "fps": 25,
    "model_size": 320, "model": "unet.onnx", "audio_encoder": "enc.onnx", "frames": "frames.mp4",
    "crop_rects": "crop_rects.json"})");
  std::vector<std::shared_ptr<LoadedAvatar>> held;
  std::vector<std::unique_ptr<AvatarRegistry>> registries;
  for (auto storage : {stream::FrameStorage::kDecoded, stream::FrameStorage::kEncoded}) {
    auto options = TestRegistryOptions(root.path());
    options.frames = storage;
    registries.push_back(std::make_unique<AvatarRegistry>(options));
    auto clip = registries.back()->Load("clip");
    ASSERT_TRUE(clip.ok()) << clip.status().ToString();
    ASSERT_TRUE((*clip)->avatar.frames_are_video());
    ASSERT_EQ((*clip)->frames.storage(), storage);
    ASSERT_EQ((*clip)->frames.size(), kFrames);
    held.push_back(*clip);
  }
  const stream::FrameStore& decoded = held[0]->frames;
  const stream::FrameStore& encoded = held[1]->frames;
  for (int i = 0; i < kFrames; ++i) {
    auto want = decoded.Get(i);
    auto got = encoded.Get(i);
    ASSERT_TRUE(want.ok() && got.ok()) << "frame " << i;
    EXPECT_EQ((*got)->bgr, (*want)->bgr) << "frame " << i;
  }
  EXPECT_LT(encoded.bytes(), decoded.bytes());
  EXPECT_EQ(decoded.bytes(), int64_t{kFrames} * (kW * kH * 3 + kCropBytes));
}

// The server's log while it lives: a ring of the last lines, the previous logger restored after.
class CapturedLog {
 public:
  CapturedLog()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64)),
        previous_(spdlog::default_logger()) {
    sink_->set_pattern("%l %v");
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", sink_));
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string Text() const {
    std::string text;
    for (const std::string& line : sink_->last_formatted()) text += line;
    return text;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

TEST(AvatarRepository, ALoadLogsWhereBothModelsRunAndWhyTheEncoderFellBack) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "ref");
  // The tiny UNet has an operator the graph compiler lacks; the demo UNet compiles.
  std::filesystem::copy_file(TestModelPath("demo/demo.onnx"), root / "ref/unet.onnx",
                             std::filesystem::copy_options::overwrite_existing);
  auto options = TestRegistryOptions(root.path());
  options.engine.backend =
      "reference";  // cannot compile the tiny encoder's MatMul: ORT CPU runs it
  AvatarRegistry registry(options);
  CapturedLog log;
  auto loaded = registry.Load("ref");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const std::string text = log.Text();
  EXPECT_NE(text.find("info loaded avatar 'ref'"), std::string::npos) << text;
  EXPECT_NE(text.find("UNet on reference/"), std::string::npos) << text;
  EXPECT_NE(text.find("audio encoder on ort/cpu"), std::string::npos) << text;
  EXPECT_NE(text.find("warning avatar 'ref': audio encoder: the reference backend cannot run it"),
            std::string::npos)
      << text;
}

TEST(AvatarRepository, OwnYamlConfig) {
  ScratchDir dir;
  WriteTestAvatar(dir / "folders", "anna");
  WriteTestAvatar(dir / "elsewhere", "bob");
  WriteFile(dir / "avatars.yaml",
            "avatars_root: folders\nmax_models: 3\nhost_memory_mb: 64\npreload: [anna]\n"
            "frame_storage: encoded\navatars:\n  robert: elsewhere/bob\n");
  auto registry = AvatarRegistry::Create(TestRegistryOptions(dir / "avatars.yaml"));
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  AvatarRegistry& r = **registry;
  EXPECT_EQ(r.Available(), (std::vector<std::string>{"anna", "robert"}));
  EXPECT_EQ(r.max_models(), 3);
  EXPECT_EQ(r.max_host_bytes(), int64_t{64} << 20);
  EXPECT_EQ(r.frame_storage(), stream::FrameStorage::kEncoded);
  ASSERT_TRUE(r.Preload().ok());
  ASSERT_NE(r.Find("anna"), nullptr);
  EXPECT_EQ(r.Find("anna")->frames.storage(), stream::FrameStorage::kEncoded);
  EXPECT_TRUE(r.Load("robert").ok());
  EXPECT_EQ(r.Load("bob").status().code(), StatusCode::kNotFound);

  // Limits the caller set win over the config's.
  auto options = TestRegistryOptions(dir / "avatars.yaml");
  options.max_models = 1;
  options.max_models_set = true;
  options.frames = stream::FrameStorage::kDecoded;
  options.frames_set = true;
  auto capped = AvatarRegistry::Create(options);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ((*capped)->max_models(), 1);
  EXPECT_EQ((*capped)->frame_storage(), stream::FrameStorage::kDecoded);
}

TEST(AvatarRepository, BadYamlIsNamedByLineAndKey) {
  ScratchDir dir;
  WriteTestAvatar(dir / "folders", "anna");
  auto error_of = [&](const std::string& text) {
    WriteFile(dir / "bad.yaml", text);
    auto registry = AvatarRegistry::Create(TestRegistryOptions(dir / "bad.yaml"));
    EXPECT_FALSE(registry.ok()) << text;
    return registry.ok() ? Status::Ok() : registry.status();
  };
  EXPECT_MESSAGE(error_of("avatars_root: folders\npreload: [anna\n"), "is not valid YAML at line");
  EXPECT_MESSAGE(error_of("avatars_root: folders\nmax_models: many\n"),
                 "'max_models' at line 2, column 13 must be an integer");
  EXPECT_MESSAGE(error_of("avatars_root: folders\nhost_memory_mb: [1]\n"),
                 "'host_memory_mb' at line 2, column 17 must be an integer");
  EXPECT_MESSAGE(error_of("avatars_root: folders\nframe_storage: zipped\n"),
                 "'frame_storage' at line 2, column 16 must be decoded or encoded, got 'zipped'");
  EXPECT_MESSAGE(error_of("avatars_root: [folders]\n"), "'avatars_root' at line 1");
  EXPECT_MESSAGE(error_of("avatar_root: folders\n"), "unknown key 'avatar_root' at line 1");
  // What the config holds is quoted shortened, never whole.
  const std::string long_name(1000, 'a');  // YAML keys end at 1024 characters
  for (const std::string& text :
       {long_name + ": 1\n", "avatars_root: folders\nframe_storage: " + long_name + "\n",
        "avatars:\n  " + long_name + ": x\n", "models:\n  " + long_name + ": {}\n"}) {
    const Status error = error_of(text);
    EXPECT_MESSAGE(error, "'aaaa");
    EXPECT_LT(error.message().size(), 500u) << error.message().substr(0, 500);
  }
  EXPECT_MESSAGE(error_of("avatars:\n  " + long_name + ": x\n"),
                 "a model id under 'avatars' at line 2, column 3: model_id 'aaaa");
  EXPECT_MESSAGE(error_of("max_models: 2\n"), "names no avatars");
  EXPECT_MESSAGE(error_of("avatars_root: nowhere\n"), "avatars_root");
  EXPECT_MESSAGE(error_of("avatars:\n  anna: [1]\n"), "must be the path of an avatar folder");
  EXPECT_MESSAGE(error_of("models: 3\n"), "'models' must be a mapping");
  EXPECT_MESSAGE(error_of("- a\n- b\n"), "expected a YAML mapping at the top");
  auto missing = AvatarRegistry::Create(TestRegistryOptions(dir / "none.yaml"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

// A Go server layout from the avatar fixtures: the dataset's frames as frame_NNNN.png, a
// rectangles file, the tiny UNet; `extra` is appended to the config.
std::string WriteGoLayout(const ScratchDir& dir, const std::string& extra = "") {
  std::filesystem::create_directories(dir / "go/anna/bg");
  std::string rects = "[";
  for (int i = 0; i < 12; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "go/anna/bg/frame_%04d.png", i);
    std::filesystem::copy_file(FixturePath("dataset/full_body_img/" + std::to_string(i) + ".png"),
                               dir / name);
    rects += std::string(i ? "," : "") + "[" + std::to_string(30 + i) + ",20,110,100]";
  }
  WriteFile(dir / "go/anna/rects.json", rects + "]");
  std::filesystem::copy_file(TestModelPath("tiny.onnx"), dir / "go/anna/anna.onnx");
  const std::string config = dir / "config.yaml";
  WriteFile(config, "models_root: go\nmax_models: 2\ngpu_ids: [0, 1]\naudio_encoder: " +
                        FixturePath("tiny_encoder.onnx") +
                        "\nmodels:\n  anna:\n    model_path: anna/anna.onnx\n"
                        "    background_dir: anna/bg\n    crop_rects_path: anna/rects.json\n"
                        "    num_frames: 12\n    preferred_gpu: 0\n" +
                        extra);
  return config;
}

TEST(AvatarRepository, GoServerConfigLoadsTheFixtureAvatar) {
  ScratchDir dir;
  const std::string config = WriteGoLayout(
      dir,
      "  nokeys:\n    background_dir: anna/bg\n"
      "  badtype:\n    model_path: anna/anna.onnx\n    crop_rects_path: anna/rects.json\n"
      "    background_dir: anna/bg\n    num_frames: twelve\n");
  auto options = TestRegistryOptions(config);
  options.cache_dir = dir / "cache";
  auto registry = AvatarRegistry::Create(options);
  ASSERT_TRUE(registry.ok()) << registry.status().ToString();
  AvatarRegistry& r = **registry;
  EXPECT_EQ(r.max_models(), 2);  // the Go config's max_models
  EXPECT_EQ(r.Available(), (std::vector<std::string>{"anna", "badtype", "nokeys"}));
  auto anna = r.Load("anna");
  ASSERT_TRUE(anna.ok()) << anna.status().ToString();
  ASSERT_EQ((*anna)->frames.size(), 12);
  EXPECT_EQ((*anna)->frames.Copy(5)->bgr,
            LoadImage(FixturePath("dataset/full_body_img/5.png"))->bgr);
  EXPECT_EQ((*anna)->avatar.crop_rects()[3], (CropRect{33, 20, 110, 100}));
  // The cache holds one avatar folder, anna-<hash of the config's path>.
  std::vector<std::string> cached;
  for (const auto& e : std::filesystem::directory_iterator(dir / "cache")) {
    cached.push_back(e.path().string());
  }
  ASSERT_EQ(cached.size(), 1u);
  EXPECT_EQ(std::filesystem::path(cached[0]).filename().string().rfind("anna-", 0), 0u);
  const std::string manifest = cached[0] + "/avatar.json";
  EXPECT_TRUE(std::filesystem::exists(manifest));
  // Entries with missing keys or wrong types fail on their own; the rest keeps serving.
  auto nokeys = r.Load("nokeys");
  EXPECT_MESSAGE(nokeys.status(), "models.nokeys: 'model_path' is missing");
  auto badtype = r.Load("badtype");
  EXPECT_MESSAGE(badtype.status(), "models.badtype.num_frames at line");
  EXPECT_MESSAGE(badtype.status(), "must be an integer");
  EXPECT_EQ(r.Find("anna").get(), anna->get());
  // A second registry reuses the cached folder.
  anna->reset();
  const auto stamp = std::filesystem::last_write_time(manifest);
  auto again = AvatarRegistry::Create(options);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE((*again)->Load("anna").ok());
  EXPECT_EQ(std::filesystem::last_write_time(manifest), stamp);
}

TEST(AvatarRepository, GoModelsNeedAnAudioEncoder) {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path());
  WriteFile(dir / "config.yaml",
            "models:\n  anna:\n    model_path: a.onnx\n    crop_rects_path: r.json\n"
            "    background_dir: bg\n");
  auto registry = AvatarRegistry::Create(TestRegistryOptions(dir / "config.yaml"));
  ASSERT_TRUE(registry.ok());
  EXPECT_MESSAGE((*registry)->Load("anna").status(), "needs an audio encoder");
}

TEST(AvatarRepository, PrometheusMetrics) {
  ScratchDir root;
  WriteTestAvatar(root.path(), "a0");
  WriteTestAvatar(root.path(), "a1");
  auto options = TestRegistryOptions(root.path());
  options.max_models = 1;
  AvatarRegistry registry(options);
  {
    auto a0 = registry.Load("a0");
    ASSERT_TRUE(a0.ok());
    (*a0)->RecordRequest(1500.0);
    (*a0)->RecordRequest(500.0);
  }
  ASSERT_TRUE(registry.Load("a1").ok());  // evicts a0
  ASSERT_TRUE(registry.Unload("a1").ok());
  std::string text;
  registry.RenderPrometheus(&text);
  for (const std::string want :
       {"lipsync_avatar_loaded{avatar=\"a0\"} 0", "lipsync_avatar_requests_total{avatar=\"a0\"} 2",
        "lipsync_avatar_inference_seconds_total{avatar=\"a0\"} 2",
        "lipsync_avatar_evictions_total{avatar=\"a0\"} 1",
        "lipsync_avatar_unloads_total{avatar=\"a1\"} 1",
        "lipsync_avatar_loads_total{avatar=\"a1\"} 1", "lipsync_avatars_loaded 0",
        "lipsync_avatars_max 1", "# TYPE lipsync_avatar_memory_bytes gauge"}) {
    EXPECT_NE(text.find(want + "\n"), std::string::npos) << "missing: " << want << "\n" << text;
  }
}

// The GPU budget holds what runs hold of the device pool's working memory (a pool on a fake
// device here: no GPU is needed to size a load); idle arenas are given back before a load counts.
TEST(AvatarRepository, TheGpuBudgetCountsTheDevicePoolsWorkingMemory) {
  constexpr int kDevice = 7;  // no real device's pool
  constexpr int64_t kArena = 64 << 20;
  ArenaAllocator fake;
  fake.allocate = [](size_t) { return ::operator new(64); };
  fake.free = [](void* p) { ::operator delete(p); };
  ArenaPool& pool = DeviceArenaPool(kDevice, [&] { return fake; });
  ScratchDir root;
  WriteTestAvatar(root.path(), "a0");
  auto options = TestRegistryOptions(root.path());
  options.engine.backend = "cuda";
  options.engine.device_id = kDevice;
  options.max_gpu_bytes = kArena + 1024;
  options.max_gpu_set = true;
  AvatarRegistry registry(options);
  EXPECT_EQ(pool.stats().limit, options.max_gpu_bytes);  // the budget less no avatar

  auto run = pool.Acquire(kArena);  // a run under way holds an arena
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  auto refused = registry.Load("a0");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_MESSAGE(refused.status(), "GPU memory budget");
  EXPECT_MESSAGE(refused.status(), "held by runs");
  std::string text;
  registry.RenderPrometheus(&text);
  std::string want = "lipsync_memory_bytes{device=\"cuda:7\",kind=\"working\"} ";
  want += std::to_string(kArena);
  want += '\n';
  EXPECT_NE(text.find(want), std::string::npos) << text;

  run->Release();  // idle now: the load gives the arena back and fits the budget
  auto loaded = registry.Load("a0");
  if (!loaded.ok()) {  // no GPU here: the engine fails, not the budget
    EXPECT_EQ(loaded.status().message().find("budget"), std::string::npos);
  }
  EXPECT_EQ(pool.stats().cached, 0);
  EXPECT_EQ(pool.stats().working_in_use, 0);
}

}  // namespace
}  // namespace lipsync::server
