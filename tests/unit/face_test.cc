#include "lipsync/face.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

namespace lipsync {
namespace {

Image Pattern(int w, int h) {
  Image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.bgr[(static_cast<size_t>(y) * w + x) * 3 + c] = (x + 2 * y + 50 * c) % 256;
  return img;
}

TEST(FaceLayout, KnownSizes) {
  auto l320 = FaceLayout::ForInputSize(320);
  ASSERT_TRUE(l320.ok());
  EXPECT_EQ(l320->crop_size, 328);
  EXPECT_EQ(l320->mask_w, 310);
  EXPECT_EQ(l320->mask_h, 305);
  auto l160 = FaceLayout::ForInputSize(160);
  ASSERT_TRUE(l160.ok());
  EXPECT_EQ(l160->crop_size, 168);
  EXPECT_EQ(l160->mask_w, 150);
  EXPECT_EQ(l160->mask_h, 145);
  EXPECT_EQ(FaceLayout::ForInputSize(256).status().code(), StatusCode::kInvalidArgument);
}

TEST(FaceInput, ChannelsScaleAndMaskRectangle) {
  for (int s : {320, 160}) {
    const FaceLayout layout = *FaceLayout::ForInputSize(s);
    const Image inner = Pattern(s, s);
    const size_t plane = static_cast<size_t>(s) * s;
    std::vector<float> visual(6 * plane, -1.0f);
    FillVisualInput(inner.bgr.data(), layout, visual.data());
    for (int y = 0; y < s; ++y) {
      for (int x = 0; x < s; ++x) {
        const bool in_mask = x >= layout.mask_x && x < layout.mask_x + layout.mask_w &&
                             y >= layout.mask_y && y < layout.mask_y + layout.mask_h;
        for (int c = 0; c < 3; ++c) {
          const size_t i = static_cast<size_t>(y) * s + x;
          const float want = inner.bgr[i * 3 + c] / 255.0f;
          ASSERT_FLOAT_EQ(visual[c * plane + i], want);
          ASSERT_FLOAT_EQ(visual[(3 + c) * plane + i], in_mask ? 0.0f : want) << x << "," << y;
        }
      }
    }
  }
  // The 320 layout's mouth rectangle, spelled out.
  const FaceLayout l320 = *FaceLayout::ForInputSize(320);
  EXPECT_EQ(l320.mask_x, 5);
  EXPECT_EQ(l320.mask_y, 5);
  EXPECT_EQ(l320.mask_x + l320.mask_w, 315);
  EXPECT_EQ(l320.mask_y + l320.mask_h, 310);
}

TEST(FaceInput, PrepareFaceBySize) {
  const FaceLayout layout = *FaceLayout::ForInputSize(320);
  // An inner-sized image is used as it is.
  const Image inner = Pattern(320, 320);
  EXPECT_EQ(PrepareFace(inner, layout)->bgr, inner.bgr);
  // A crop-sized image gives its centre [4, 324).
  const Image crop = Pattern(328, 328);
  auto centre = PrepareFace(crop, layout);
  ASSERT_TRUE(centre.ok());
  for (int y = 0; y < 320; y += 17)
    for (int x = 0; x < 320; x += 13)
      EXPECT_EQ(centre->bgr[(y * 320 + x) * 3], crop.bgr[((y + 4) * 328 + x + 4) * 3]);
  // Any other size is resized first; a flat image stays flat.
  Image flat{500, 400, std::vector<uint8_t>(500 * 400 * 3, 77)};
  auto resized = PrepareFace(flat, layout);
  ASSERT_TRUE(resized.ok());
  EXPECT_EQ(resized->width, 320);
  for (uint8_t v : resized->bgr) ASSERT_EQ(v, 77);
  Image broken{10, 10, std::vector<uint8_t>(5)};
  EXPECT_EQ(PrepareFace(broken, layout).status().code(), StatusCode::kInvalidArgument);
}

TEST(FaceOutput, ScalesClampsAndTruncates) {
  const int s = 2;
  std::vector<float> chw = {0.0f, 0.5f, 1.0f, 2.0f, -1.0f, 0.999f,
                            0.1f, 0.2f, 0.3f, 0.4f, 0.6f,  0.7f};
  std::vector<uint8_t> bgr(s * s * 3);
  OutputToImage(chw.data(), s, bgr.data());
  EXPECT_EQ(bgr[0], 0);    // pixel 0, B
  EXPECT_EQ(bgr[3], 127);  // pixel 1, B: 127.5 truncated
  EXPECT_EQ(bgr[6], 255);  // pixel 2, B
  EXPECT_EQ(bgr[9], 255);  // pixel 3, B: 2.0 clamped
  EXPECT_EQ(bgr[1], 0);    // pixel 0, G: -1 clamped
  EXPECT_EQ(bgr[4], 254);  // pixel 1, G: 254.7 truncated
  EXPECT_EQ(bgr[2], 76);   // pixel 0, R: 76.5
}

// The vectorised conversion against the obvious per-pixel loop, on random values around and
// outside [0, 1] (and NaN, which becomes 0).
TEST(FaceOutput, MatchesPerPixelLoopOnRandomValues) {
  for (int s : {320, 160, 7}) {
    const size_t plane = static_cast<size_t>(s) * s;
    std::vector<float> chw(3 * plane);
    uint32_t state = 12345u + s;
    for (auto& v : chw) {
      state = state * 1664525u + 1013904223u;
      v = static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 1.4f - 0.2f;
    }
    chw[5] = std::numeric_limits<float>::quiet_NaN();
    std::vector<uint8_t> got(3 * plane), want(3 * plane);
    OutputToImage(chw.data(), s, got.data());
    for (size_t p = 0; p < plane; ++p) {
      for (int c = 0; c < 3; ++c) {
        const float x = chw[c * plane + p];
        want[p * 3 + c] =
            std::isnan(x) ? 0 : static_cast<uint8_t>(std::clamp(x * 255.0f, 0.0f, 255.0f));
      }
    }
    ASSERT_EQ(got, want) << "size " << s;
  }
}

TEST(ImageIo, RoundTripAndErrors) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string png = (dir / "lipsync_face_rt.png").string();
  const Image img = Pattern(40, 30);
  ASSERT_TRUE(SaveImage(png, img).ok());
  auto loaded = LoadImage(png);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->width, 40);
  EXPECT_EQ(loaded->height, 30);
  EXPECT_EQ(loaded->bgr, img.bgr);  // PNG is lossless

  EXPECT_EQ(LoadImage((dir / "lipsync_no_such.png").string()).status().code(),
            StatusCode::kNotFound);
  const std::string junk = (dir / "lipsync_junk.png").string();
  std::ofstream(junk) << "not an image";
  auto bad = LoadImage(junk);
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find(junk), std::string::npos);
}

}  // namespace
}  // namespace lipsync
