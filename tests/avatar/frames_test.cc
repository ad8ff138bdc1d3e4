// Whole-frame crop, mask and paste against the OpenCV-Python reference written by
// make_fixtures.py, and the order in which avatar frames are shown.
#include "lipsync/frames.h"

#include <gtest/gtest.h>

#include <cstring>

#include "avatar_test_util.h"
#include "lipsync/avatar.h"
#include "lipsync/npy.h"

namespace lipsync {
namespace {

using testing::CompareBytes;
using testing::FixturePath;

// Upstream's loop (SyncTalk_2D inference), simulated step by step with its index and stride,
// started from `start` going forward: the slow obvious reference for FrameSequence.
std::vector<int64_t> UpstreamPingPong(int64_t n, int64_t start, int count) {
  std::vector<int64_t> order;
  const int64_t last = n - 1;
  int64_t idx = start, stride = 1;
  for (int i = 0; i < count; ++i) {
    order.push_back(idx);
    if (last == 0) continue;
    if (idx + stride > last) stride = -1;
    if (idx + stride < 0) stride = 1;
    idx += stride;
  }
  return order;
}

TEST(FrameSequence, PingPongSpelledOut) {
  // Four frames, upstream's start (frame 1): 1,2,3,2,1,0,1,2,3,...
  auto seq = FrameSequence::Create(4, FrameOrder::kPingPong);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(seq->start(), 1);
  std::vector<int64_t> got;
  for (int i = 0; i < 10; ++i) got.push_back((*seq)(i));
  EXPECT_EQ(got, (std::vector<int64_t>{1, 2, 3, 2, 1, 0, 1, 2, 3, 2}));
}

TEST(FrameSequence, PingPongMatchesUpstreamLoopForEveryStart) {
  for (int64_t n = 1; n <= 7; ++n) {
    for (int64_t start = 0; start < n; ++start) {
      auto seq = FrameSequence::Create(n, FrameOrder::kPingPong, start);
      ASSERT_TRUE(seq.ok()) << seq.status().ToString();
      const auto want = UpstreamPingPong(n, start, 60);
      for (int i = 0; i < 60; ++i) {
        ASSERT_EQ((*seq)(i), want[static_cast<size_t>(i)])
            << "n " << n << " start " << start << " output " << i;
      }
    }
  }
  // Far along, the walk is still periodic with period 2(n-1).
  auto seq = FrameSequence::Create(5, FrameOrder::kPingPong, 2);
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ((*seq)(1000003), (*seq)(3));
}

TEST(FrameSequence, LoopAndDefaults) {
  auto loop = FrameSequence::Create(3, FrameOrder::kLoop);
  ASSERT_TRUE(loop.ok());
  EXPECT_EQ(loop->start(), 0);
  std::vector<int64_t> got;
  for (int i = 0; i < 7; ++i) got.push_back((*loop)(i));
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0}));
  auto from2 = FrameSequence::Create(3, FrameOrder::kLoop, 2);
  ASSERT_TRUE(from2.ok());
  EXPECT_EQ((*from2)(0), 2);
  EXPECT_EQ((*from2)(1), 0);
  // A one-frame avatar always shows frame 0, whatever the order.
  auto single = FrameSequence::Create(1, FrameOrder::kPingPong);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ((*single)(0), 0);
  EXPECT_EQ((*single)(5), 0);
}

TEST(FrameSequence, BadArguments) {
  auto past = FrameSequence::Create(4, FrameOrder::kPingPong, 4);
  EXPECT_EQ(past.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(past.status().message().find("start frame 4 is outside the avatar's 4 frames (0..3)"),
            std::string::npos)
      << past.status().message();
  EXPECT_FALSE(FrameSequence::Create(4, FrameOrder::kLoop, -2).ok());
  EXPECT_FALSE(FrameSequence::Create(0, FrameOrder::kLoop).ok());
  EXPECT_EQ(ParseFrameOrder("loop").value(), FrameOrder::kLoop);
  EXPECT_EQ(ParseFrameOrder("pingpong").value(), FrameOrder::kPingPong);
  EXPECT_FALSE(ParseFrameOrder("random").ok());
}

TEST(CropRect, Checks) {
  EXPECT_TRUE(CheckCropRect({0, 0, 64, 48}, 64, 48).ok());
  Status empty = CheckCropRect({10, 10, 10, 20}, 64, 48);
  EXPECT_NE(empty.message().find("[10,10,10,20] is empty"), std::string::npos);
  Status outside = CheckCropRect({10, 10, 65, 20}, 64, 48);
  EXPECT_NE(outside.message().find("[10,10,65,20] lies outside the 64x48 frame"),
            std::string::npos);
  EXPECT_FALSE(CheckCropRect({-1, 0, 10, 10}, 64, 48).ok());
}

// Reads the rectangles make_fixtures.py used.
std::vector<CropRect> ReferenceRects() {
  auto rects = ReadCropRects(FixturePath("frames_ref/rects.json"));
  EXPECT_TRUE(rects.ok()) << rects.status().ToString();
  return rects.ok() ? *rects : std::vector<CropRect>{};
}

// The bar: at least 99.9% of bytes within 1 of the reference.
void ExpectCloseToReference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                            const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const auto d = CompareBytes(got, want, 1);
  EXPECT_LE(d.share_over, 0.001) << what << ": " << d.share_over * 100
                                 << "% of bytes differ by more than 1 (max " << d.max << ")";
}

TEST(FramePipeline, CropAndMaskMatchOpenCvReference) {
  const auto layout = *FaceLayout::ForInputSize(320);
  auto frame = LoadImage(FixturePath("frames_ref/frame.png"));
  ASSERT_TRUE(frame.ok()) << frame.status().ToString();
  const auto rects = ReferenceRects();
  ASSERT_EQ(rects.size(), 8u);
  for (size_t i = 0; i < rects.size(); ++i) {
    const std::string n = std::to_string(i);
    auto crop = CropFace(*frame, rects[i], layout);
    ASSERT_TRUE(crop.ok()) << crop.status().ToString();
    auto inner = PrepareFace(*crop, layout);
    ASSERT_TRUE(inner.ok());
    auto want_inner = LoadImage(FixturePath("frames_ref/inner_" + n + ".png"));
    ASSERT_TRUE(want_inner.ok());
    ExpectCloseToReference(inner->bgr, want_inner->bgr, "inner face " + n);

    // The model's visual input: channels 3-5 must be the reference's masked copy.
    std::vector<float> visual(6 * 320 * 320);
    FillVisualInput(inner->bgr.data(), layout, visual.data());
    auto want_masked = LoadImage(FixturePath("frames_ref/masked_" + n + ".png"));
    ASSERT_TRUE(want_masked.ok());
    std::vector<uint8_t> masked(320 * 320 * 3);
    for (size_t p = 0; p < 320 * 320; ++p) {
      for (int c = 0; c < 3; ++c) {
        masked[p * 3 + c] = static_cast<uint8_t>(visual[(3 + c) * 320 * 320 + p] * 255.0f + 0.5f);
      }
    }
    ExpectCloseToReference(masked, want_masked->bgr, "masked face " + n);
  }
}

TEST(FramePipeline, PasteMatchesOpenCvReferenceAndKeepsTheRestOfTheFrame) {
  const auto layout = *FaceLayout::ForInputSize(320);
  auto original = LoadImage(FixturePath("frames_ref/frame.png"));
  ASSERT_TRUE(original.ok());
  const auto rects = ReferenceRects();
  for (size_t i = 0; i < rects.size(); ++i) {
    const std::string n = std::to_string(i);
    auto output = LoadNpy(FixturePath("frames_ref/output_" + n + ".npy"));
    ASSERT_TRUE(output.ok()) << output.status().ToString();
    ASSERT_EQ(output->shape(), (Shape{3, 320, 320}));
    Image frame = *original;
    auto crop = CropFace(frame, rects[i], layout);
    ASSERT_TRUE(crop.ok());
    std::vector<uint8_t> face(320 * 320 * 3);
    OutputToImage(output->data_as<float>(), 320, face.data());
    ASSERT_TRUE(PasteFace(face.data(), layout, *crop, rects[i], frame).ok());

    auto want = LoadImage(FixturePath("frames_ref/pasted_" + n + ".png"));
    ASSERT_TRUE(want.ok());
    ExpectCloseToReference(frame.bgr, want->bgr, "pasted frame " + n);
    // Outside the rectangle, every byte is the original's.
    const CropRect& r = rects[i];
    size_t changed_outside = 0;
    for (int y = 0; y < frame.height; ++y) {
      for (int x = 0; x < frame.width; ++x) {
        if (x >= r.x1 && x < r.x2 && y >= r.y1 && y < r.y2) continue;
        const size_t at = (static_cast<size_t>(y) * frame.width + x) * 3;
        changed_outside += std::memcmp(&frame.bgr[at], &original->bgr[at], 3) != 0;
      }
    }
    EXPECT_EQ(changed_outside, 0u) << "rectangle " << n;
  }
}

TEST(FramePipeline, RejectsBadGeometry) {
  const auto layout = *FaceLayout::ForInputSize(320);
  const Image frame = testing::PatternImage(64, 48);
  EXPECT_EQ(CropFace(frame, {0, 0, 65, 48}, layout).status().code(), StatusCode::kInvalidArgument);
  Image wrong_crop = testing::PatternImage(320, 320);
  Image target = frame;
  std::vector<uint8_t> face(320 * 320 * 3);
  Status s = PasteFace(face.data(), layout, wrong_crop, {0, 0, 32, 32}, target);
  EXPECT_NE(s.message().find("face crop is 320x320, expected 328 square"), std::string::npos)
      << s.message();
  EXPECT_EQ(target.bgr, frame.bgr);
}

}  // namespace
}  // namespace lipsync
