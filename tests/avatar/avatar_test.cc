// Avatar folders: loading, and the message for each way one can be wrong; landmark files.
#include "lipsync/avatar.h"

#include <gtest/gtest.h>

#include "avatar_test_util.h"

namespace lipsync {
namespace {

using testing::ScratchDir;
using testing::WriteFile;

#define EXPECT_MESSAGE(status, text)                          \
  EXPECT_NE((status).message().find(text), std::string::npos) \
      << "message: " << (status).message() << "\nexpected to contain: " << (text)

constexpr int kW = 64, kH = 48;

// A valid three-frame avatar folder with image frames; the models are placeholder files (loading
// only checks that they exist).
void WriteAvatar(const ScratchDir& dir, int frames = 3) {
  WriteFile(dir / "avatar.json", R"({"format": "lipsync-avatar", "version": 1, "name": "t",
    "fps": 25, "model_size": 320, "model": "unet.onnx", "audio_encoder": "enc.onnx",
    "frames": "frames", "crop_rects": "crop_rects.json"})");
  WriteFile(dir / "unet.onnx", "x");
  WriteFile(dir / "enc.onnx", "x");
  std::string rects = "[";
  for (int i = 0; i < frames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "frames/%06d.png", i);
    std::filesystem::create_directories(dir / "frames");
    ASSERT_TRUE(SaveImage(dir / name, testing::PatternImage(kW, kH, i)).ok());
    rects += std::string(i ? "," : "") + "[" + std::to_string(4 + i) + ",4,40,40]";
  }
  WriteFile(dir / "crop_rects.json", rects + "]");
}

TEST(LoadAvatar, ValidFolder) {
  ScratchDir dir;
  WriteAvatar(dir);
  auto avatar = LoadAvatar(dir.path());
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  EXPECT_EQ(avatar->manifest().name, "t");
  EXPECT_EQ(avatar->frame_count(), 3);
  EXPECT_EQ(avatar->width(), kW);
  EXPECT_EQ(avatar->height(), kH);
  EXPECT_FALSE(avatar->frames_are_video());
  EXPECT_EQ(avatar->crop_rects()[2], (CropRect{6, 4, 40, 40}));
  EXPECT_EQ(avatar->model_path(), dir / "unet.onnx");
  auto reader = avatar->OpenFrames();
  ASSERT_TRUE(reader.ok());
  auto frame = (*reader)->Read(2);
  ASSERT_TRUE(frame.ok());
  EXPECT_EQ(frame->bgr, testing::PatternImage(kW, kH, 2).bgr);
  EXPECT_FALSE((*reader)->Read(3).ok());
  EXPECT_TRUE(CheckAvatarFrames(*avatar).ok());
}

TEST(LoadAvatar, MissingFiles) {
  ScratchDir dir;
  EXPECT_EQ(LoadAvatar(dir / "nowhere").status().code(), StatusCode::kNotFound);
  auto none = LoadAvatar(dir.path());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_MESSAGE(none.status(), "avatar.json' not found");

  WriteAvatar(dir);
  std::filesystem::remove(dir / "enc.onnx");
  auto no_encoder = LoadAvatar(dir.path());
  EXPECT_EQ(no_encoder.status().code(), StatusCode::kNotFound);
  EXPECT_MESSAGE(no_encoder.status(), "audio encoder '" + (dir / "enc.onnx") + "' not found");

  WriteFile(dir / "enc.onnx", "x");
  std::filesystem::remove(dir / "crop_rects.json");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "crop_rects.json' not found");

  WriteAvatar(dir);
  std::filesystem::remove_all(dir / "frames");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "frames '" + (dir / "frames") + "' not found");
}

TEST(LoadAvatar, BadManifest) {
  ScratchDir dir;
  WriteAvatar(dir);
  WriteFile(dir / "avatar.json", "{\n  \"name\": \"t\",\n  \"fps\": 25,,\n}");
  auto syntax = LoadAvatar(dir.path());
  EXPECT_EQ(syntax.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(syntax.status(), "is not valid JSON at line 3, column 13");

  WriteFile(dir / "avatar.json", R"({"name": "t", "modle": "x.onnx"})");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "unknown key 'modle'");
  // A long key is shortened in the message, not repeated whole.
  WriteFile(dir / "avatar.json", "{\"name\": \"t\", \"" + std::string(100000, 'k') + "\": 1}");
  auto long_key = LoadAvatar(dir.path());
  EXPECT_MESSAGE(long_key.status(), "unknown key 'kkkk");
  EXPECT_LT(long_key.status().message().size(), 500u);
  WriteFile(dir / "avatar.json", R"({"fps": 25})");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "'name' is missing");
  WriteFile(dir / "avatar.json", R"({"name": "t", "model_size": 256})");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "'model_size' must be 320 or 160, got 256");
  WriteFile(dir / "avatar.json", R"({"name": "t", "fps": "fast"})");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "'fps' must be a number in (0, 240]");
  WriteFile(dir / "avatar.json", R"({"name": "t", "version": 7})");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "'version' 7 is not supported");
  WriteFile(dir / "avatar.json", R"(["name"])");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "expected a JSON object");
}

TEST(LoadAvatar, FrameNumbering) {
  ScratchDir dir;
  WriteAvatar(dir, 4);
  std::filesystem::remove(dir / "frames/000002.png");
  auto gap = LoadAvatar(dir.path());
  EXPECT_MESSAGE(gap.status(), "frame 2 is missing");

  WriteAvatar(dir, 4);
  WriteFile(dir / "frames/1.jpg", "not read: the numbering is checked first");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(),
                 "frame 1 appears twice ('000001.png' and '1.jpg')");
}

TEST(LoadAvatar, BadCropRects) {
  ScratchDir dir;
  WriteAvatar(dir);
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[4,4,40,40]]");
  auto count = LoadAvatar(dir.path());
  EXPECT_EQ(count.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(count.status(), "has 2 rectangles for 3 frames");

  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[1,2,3],[4,4,40,40]]");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(),
                 "entry 1: expected [x1,y1,x2,y2] integers, got [1,2,3]");
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[4,4,40.5,40],[4,4,40,40]]");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "entry 1: expected [x1,y1,x2,y2] integers");
  // nlohmann's parser throws out_of_range, not parse_error, for a number past a double's range.
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[4,4,40,1e999],[4,4,40,40]]");
  auto huge = LoadAvatar(dir.path());
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(huge.status(), "crop_rects.json' holds a number too large to read");
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],\n[4,4,40,40]\n[4,4,40,40]]");
  EXPECT_MESSAGE(LoadAvatar(dir.path()).status(), "is not valid JSON at line 3, column 1");
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[4,4,40,40],[30,20,70,40]]");
  auto outside = LoadAvatar(dir.path());
  EXPECT_MESSAGE(outside.status(),
                 "crop_rects.json' entry 2: crop rectangle [30,20,70,40] lies outside the 64x48 "
                 "frame");
  // Whole numbers written as floats are accepted.
  WriteFile(dir / "crop_rects.json", "[[4,4,40,40],[4.0,4,40,40],[4,4,40,40]]");
  EXPECT_TRUE(LoadAvatar(dir.path()).ok());
}

TEST(CheckAvatarFrames, UnreadableAndWrongSizedFrames) {
  ScratchDir dir;
  WriteAvatar(dir, 4);
  WriteFile(dir / "frames/000002.png", "not a png");
  auto avatar = LoadAvatar(dir.path());  // decodes frame 0 only
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  std::vector<int64_t> seen;
  Status broken = CheckAvatarFrames(*avatar, [&](int64_t done, int64_t) { seen.push_back(done); });
  EXPECT_EQ(broken.code(), StatusCode::kDataLoss);
  EXPECT_MESSAGE(broken, "frame 2: cannot decode image");
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2}));

  ASSERT_TRUE(SaveImage(dir / "frames/000002.png", testing::PatternImage(kW + 2, kH)).ok());
  Status size = CheckAvatarFrames(*avatar);
  EXPECT_MESSAGE(size, "frame 2 ('" + (dir / "frames/000002.png") +
                           "') is 66x48, the avatar's frames are 64x48");
}

TEST(Landmarks, ReadsAndReportsLineErrors) {
  ScratchDir dir;
  std::string good;
  for (int i = 0; i < 110; ++i) good += std::to_string(i) + " " + std::to_string(200 - i) + "\n";
  WriteFile(dir / "good.lms", good + "\n\n");  // trailing blank lines are fine
  auto points = ReadLandmarks(dir / "good.lms");
  ASSERT_TRUE(points.ok()) << points.status().ToString();
  EXPECT_EQ((*points)[52].x, 52);
  EXPECT_EQ((*points)[52].y, 148);

  std::string crlf_floats;  // Windows line ends; floats truncated like numpy's int cast
  for (int i = 0; i < 110; ++i) crlf_floats += "12.9 -3.7\r\n";
  WriteFile(dir / "floats.lms", crlf_floats);
  auto floats = ReadLandmarks(dir / "floats.lms");
  ASSERT_TRUE(floats.ok()) << floats.status().ToString();
  EXPECT_EQ((*floats)[0].x, 12);
  EXPECT_EQ((*floats)[0].y, -3);

  WriteFile(dir / "short.lms", good.substr(0, good.rfind("108 ")));
  EXPECT_MESSAGE(ReadLandmarks(dir / "short.lms").status(),
                 "expected 110 lines of \"x y\", got 108");
  std::string words = good;
  words.replace(words.find("6 194"), 5, "6 abc");
  WriteFile(dir / "words.lms", words);
  auto bad = ReadLandmarks(dir / "words.lms");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_MESSAGE(bad.status(), "line 7: '6 abc' is not two numbers");
  std::string three = good;
  three.replace(three.find("9 191"), 5, "9 191 4");
  WriteFile(dir / "three.lms", three);
  EXPECT_MESSAGE(ReadLandmarks(dir / "three.lms").status(), "line 10: '9 191 4'");
  EXPECT_EQ(ReadLandmarks(dir / "none.lms").status().code(), StatusCode::kNotFound);
}

std::vector<LandmarkPoint> Points(int x1, int x31, int y52) {
  std::vector<LandmarkPoint> p(110, {0, 0});
  p[1] = {x1, 999};
  p[31] = {x31, 999};
  p[52] = {999, y52};
  return p;
}

TEST(Landmarks, CropSquareFromPoints1_31_52) {
  EXPECT_EQ(CropRectFromLandmarks(Points(20, 60, 10), 100, 100).value(),
            (CropRect{20, 10, 60, 50}));
  // Clipped at the bottom and right edges, keeping the real height and width.
  EXPECT_EQ(CropRectFromLandmarks(Points(70, 120, 80), 100, 100).value(),
            (CropRect{70, 80, 100, 100}));
  // And at the top and left.
  EXPECT_EQ(CropRectFromLandmarks(Points(-5, 30, -10), 100, 100).value(), (CropRect{0, 0, 30, 25}));
  auto reversed = CropRectFromLandmarks(Points(60, 20, 10), 100, 100);
  EXPECT_MESSAGE(reversed.status(), "landmark 31 (x 20) is not right of landmark 1 (x 60)");
  auto outside = CropRectFromLandmarks(Points(120, 160, 10), 100, 100);
  EXPECT_MESSAGE(outside.status(), "face square [120,10,160,50] lies outside the 100x100 frame");
}

}  // namespace
}  // namespace lipsync
