// Importing a SyncTalk_2D dataset and a Go server model; failures leave nothing behind.
#include <gtest/gtest.h>

#include "avatar_test_util.h"
#include "lipsync/avatar.h"
#include "lipsync/video.h"
#include "pipeline/stream/frame_source.h"

namespace lipsync {
namespace {

using testing::FixturePath;
using testing::ScratchDir;
using testing::TestModelPath;
using testing::WriteFile;

#define EXPECT_MESSAGE(status, text)                          \
  EXPECT_NE((status).message().find(text), std::string::npos) \
      << "message: " << (status).message() << "\nexpected to contain: " << (text)

AvatarImportOptions Options(const std::string& out) {
  AvatarImportOptions o;
  o.out_dir = out;
  o.model = TestModelPath("tiny.onnx");
  o.audio_encoder = FixturePath("tiny_encoder.onnx");
  return o;
}

// A copy of the fixture dataset that a test may break.
std::string CopyDataset(const ScratchDir& dir) {
  const std::string copy = dir / "dataset";
  std::filesystem::copy(FixturePath("dataset"), copy, std::filesystem::copy_options::recursive);
  return copy;
}

TEST(ImportSyncTalk, MakesAnAvatarWithTheSpecCropBoxes) {
  ScratchDir dir;
  auto avatar = ImportSyncTalkDataset(FixturePath("dataset"), Options(dir / "avatar"));
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  EXPECT_EQ(avatar->frame_count(), 12);
  EXPECT_EQ(avatar->manifest().name, "dataset");
  EXPECT_EQ(avatar->manifest().model_size, 320);
  EXPECT_EQ(avatar->width(), 160);
  for (int i = 0; i < 12; ++i) {
    auto lms = ReadLandmarks(FixturePath("dataset/landmarks/" + std::to_string(i) + ".lms"));
    ASSERT_TRUE(lms.ok());
    const auto& p = *lms;
    const int side = p[31].x - p[1].x;
    const CropRect want{p[1].x, p[52].y, p[31].x, std::min(p[52].y + side, 120)};
    EXPECT_EQ(avatar->crop_rects()[static_cast<size_t>(i)], want) << "frame " << i;
  }
  // Frames are copied byte for byte.
  auto reader = avatar->OpenFrames();
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->Read(5)->bgr, LoadImage(FixturePath("dataset/full_body_img/5.png"))->bgr);
  EXPECT_TRUE(CheckAvatarModels(*avatar).ok());
  // Importing over a non-empty folder is refused.
  auto again = ImportSyncTalkDataset(FixturePath("dataset"), Options(dir / "avatar"));
  EXPECT_MESSAGE(again.status(), "already exists and is not an empty folder");
}

TEST(ImportSyncTalk, FramesAndLandmarksMustPairUp) {
  ScratchDir dir;
  const std::string data = CopyDataset(dir);
  std::filesystem::copy_file(data + "/landmarks/3.lms", data + "/landmarks/12.lms");
  auto extra = ImportSyncTalkDataset(data, Options(dir / "a"));
  EXPECT_MESSAGE(extra.status(), "12 frames in full_body_img/ but 13 landmark files in landmarks/");
  std::filesystem::remove(data + "/landmarks/12.lms");
  std::filesystem::remove(data + "/landmarks/4.lms");
  auto gap = ImportSyncTalkDataset(data, Options(dir / "a"));
  EXPECT_MESSAGE(gap.status(), "landmarks 4 is missing");
  EXPECT_EQ(dir.List(), std::vector<std::string>{"dataset"});  // nothing else was written
}

TEST(ImportSyncTalk, BrokenFilesAreNamed) {
  ScratchDir dir;
  const std::string data = CopyDataset(dir);
  WriteFile(data + "/landmarks/7.lms", "1 2\n3 4\n");
  auto short_lms = ImportSyncTalkDataset(data, Options(dir / "a"));
  EXPECT_MESSAGE(short_lms.status(), "7.lms': expected 110 lines");

  std::filesystem::copy_file(FixturePath("dataset/landmarks/7.lms"), data + "/landmarks/7.lms",
                             std::filesystem::copy_options::overwrite_existing);
  WriteFile(data + "/full_body_img/9.png", "garbage");
  auto frame = ImportSyncTalkDataset(data, Options(dir / "a"));
  EXPECT_EQ(frame.status().code(), StatusCode::kDataLoss);
  EXPECT_MESSAGE(frame.status(), "frame 9: cannot decode image");

  std::filesystem::copy_file(FixturePath("dataset/full_body_img/9.png"),
                             data + "/full_body_img/9.png",
                             std::filesystem::copy_options::overwrite_existing);
  auto options = Options(dir / "a");
  options.audio_encoder = TestModelPath("tiny.onnx");  // a UNet is not an audio encoder
  EXPECT_MESSAGE(ImportSyncTalkDataset(data, options).status(),
                 "expected one input of mel windows [N,1,80,16]");
  options = Options(dir / "a");
  options.model = FixturePath("tiny_encoder.onnx");
  EXPECT_MESSAGE(ImportSyncTalkDataset(data, options).status(), "expected a lip-sync UNet");
  EXPECT_EQ(dir.List(), std::vector<std::string>{"dataset"});
}

// A Go server layout: config.yaml with models_root, frame_NNNN.png backgrounds, a rects file.
std::string WriteGoLayout(const ScratchDir& dir, int frames, const std::string& frame_name,
                          int num_frames = 0) {
  std::filesystem::create_directories(dir / "root/anna/bg");
  std::string rects = "[";
  for (int i = 0; i < frames; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), frame_name.c_str(), i);
    EXPECT_TRUE(
        SaveImage(dir / ("root/anna/bg/" + std::string(name)), testing::PatternImage(64, 48, i))
            .ok());
    rects += std::string(i ? "," : "") + "[" + std::to_string(i) + ",2,40,38]";
  }
  WriteFile(dir / "root/anna/rects.json", rects + "]");
  std::filesystem::copy_file(TestModelPath("tiny.onnx"), dir / "root/anna/anna.onnx");
  const std::string config = dir / "config.yaml";
  WriteFile(
      config,
      "models_root: root\nmax_models: 4\nmodels:\n  anna:\n"
      "    model_path: anna/anna.onnx\n    background_dir: anna/bg\n"
      "    crop_rects_path: anna/rects.json\n" +
          (num_frames ? "    num_frames: " + std::to_string(num_frames) + "\n" : std::string()) +
          "    preferred_gpu: 0\n  bob:\n    model_path: x.onnx\n");
  return config;
}

TEST(ImportGo, BackgroundFramesAndRects) {
  for (const std::string pattern : {"frame_%04d.png", "frame_%d.png"}) {
    ScratchDir dir;
    const std::string config = WriteGoLayout(dir, 11, pattern);
    auto options = Options(dir / "anna");
    options.model.clear();  // from the config's model_path
    auto avatar = ImportGoServerModel(config, "anna", options);
    ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
    EXPECT_EQ(avatar->manifest().name, "anna");
    EXPECT_EQ(avatar->frame_count(), 11);
    EXPECT_EQ(avatar->crop_rects()[10], (CropRect{10, 2, 40, 38}));
    auto reader = avatar->OpenFrames();
    ASSERT_TRUE(reader.ok());
    EXPECT_EQ((*reader)->Read(10)->bgr, testing::PatternImage(64, 48, 10).bgr) << pattern;
  }
}

TEST(ImportGo, NumFramesAndMismatches) {
  ScratchDir dir;
  std::string config = WriteGoLayout(dir, 6, "frame_%d.png", 4);
  auto options = Options(dir / "anna");
  auto first4 = ImportGoServerModel(config, "anna", options);
  ASSERT_TRUE(first4.ok()) << first4.status().ToString();
  EXPECT_EQ(first4->frame_count(), 4);

  ScratchDir other;
  config = WriteGoLayout(other, 6, "frame_%d.png");
  WriteFile(other / "root/anna/rects.json", "[[0,2,40,38]]");
  auto mismatch = ImportGoServerModel(config, "anna", Options(other / "anna"));
  EXPECT_MESSAGE(mismatch.status(), "6 frames in '");
  EXPECT_MESSAGE(mismatch.status(), "and 1 rectangles in '");
  auto unknown = ImportGoServerModel(config, "carol", Options(other / "carol"));
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_MESSAGE(unknown.status(), "no model 'carol' under 'models' (it has: anna, bob)");
  // A config of many models names the first few in the message, not all of them.
  std::string many = "models:\n";
  for (int i = 0; i < 5000; ++i) many += "  model" + std::to_string(i) + ": {}\n";
  WriteFile(other / "many.yaml", many);
  auto not_listed = ImportGoServerModel(other / "many.yaml", "carol", Options(other / "y"));
  EXPECT_MESSAGE(not_listed.status(),
                 "(it has: model0, model1, model2, model3, model4, model5, "
                 "model6, model7 and 4992 more)");
  WriteFile(other / "bad.yaml", "models:\n  anna: [1, 2\n  bob: 3\n");
  auto bad = ImportGoServerModel(other / "bad.yaml", "anna", Options(other / "x"));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(bad.status(), "is not valid YAML at line");
  WriteFile(other / "root/anna/rects.json",
            "[[0,2,40,38],[1,2,40,38],[2,2,40,38],"
            "[3,2,40,38],[4,2,40,38],[5,2,70,38]]");
  auto outside = ImportGoServerModel(config, "anna", Options(other / "anna"));
  EXPECT_MESSAGE(outside.status(), "crop rectangle 5: crop rectangle [5,2,70,38] lies outside");
  EXPECT_FALSE(std::filesystem::exists(other / "anna"));
  EXPECT_FALSE(std::filesystem::exists(other / "x"));
}

TEST(ImportGo, SourceVideoWhenTheBackgroundFolderIsEmpty) {
  ScratchDir dir;
  std::string config = WriteGoLayout(dir, 1, "frame_%d.png");
  std::filesystem::remove_all(dir / "root/anna/bg");
  std::filesystem::create_directories(dir / "root/anna/bg");
  VideoWriterOptions vo;
  vo.width = 64;
  vo.height = 48;
  vo.audio = false;
  {
    auto writer = VideoWriter::Create(dir / "root/anna/source.mp4", vo);
    ASSERT_TRUE(writer.ok());
    for (int i = 0; i < 9; ++i)
      ASSERT_TRUE((*writer)->WriteFrame(testing::PatternImage(64, 48, i)).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  std::string rects = "[";
  for (int i = 0; i < 9; ++i) rects += std::string(i ? "," : "") + "[4,4,36,36]";
  WriteFile(dir / "root/anna/rects.json", rects + "]");
  WriteFile(config,
            "models_root: root\nmodels:\n  anna:\n    model_path: anna/anna.onnx\n"
            "    background_dir: anna/bg\n    source_video: anna/source.mp4\n"
            "    crop_rects_path: anna/rects.json\n");
  auto avatar = ImportGoServerModel(config, "anna", Options(dir / "anna"));
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  EXPECT_TRUE(avatar->frames_are_video());
  EXPECT_EQ(avatar->frame_count(), 9);
  EXPECT_TRUE(CheckAvatarFrames(*avatar).ok());
  // Ping-pong reading (backwards through a small cache) gives the frames sequential reading does.
  auto sequential = avatar->OpenFrames();
  auto pingpong = avatar->OpenFrames({/*video_cache_frames=*/3});
  ASSERT_TRUE(sequential.ok() && pingpong.ok());
  std::vector<Image> frames;
  for (int i = 0; i < 9; ++i) frames.push_back(*(*sequential)->Read(i));
  auto order = FrameSequence::Create(9, FrameOrder::kPingPong);
  for (int i = 0; i < 40; ++i) {
    const int64_t k = (*order)(i);
    auto frame = (*pingpong)->Read(k);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_EQ(frame->bgr, frames[static_cast<size_t>(k)].bgr) << "output " << i << " frame " << k;
  }
  // Decoded ahead, a video has one helper (its reader walks the file), and gives the same frames.
  stream::CachedFramesOptions ahead;
  ahead.reader.video_cache_frames = 3;
  ahead.decode_threads = 4;
  auto source = stream::CachedFrames::Open(*avatar, FaceLayout::ForInputSize(320).value(), ahead);
  ASSERT_TRUE(source.ok()) << source.status().ToString();
  EXPECT_EQ((*source)->read_ahead(), 2);
  for (int i = 0; i < 40; ++i) {
    for (int j = 1; j <= 2; ++j) (*source)->Expect((*order)(i + j));
    const int64_t k = (*order)(i);
    auto frame = (*source)->Read(k);
    ASSERT_TRUE(frame.ok()) << frame.status().ToString();
    EXPECT_EQ(frame->frame.bgr, frames[static_cast<size_t>(k)].bgr) << "output " << i;
  }
}

}  // namespace
}  // namespace lipsync
