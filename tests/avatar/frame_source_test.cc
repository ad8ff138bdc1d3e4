// CachedFrames on its own: frames decoded ahead on helper threads against frames decoded on read,
// and a source closed while its helpers still have work. (Through render: render_test.cc.)
#include "pipeline/stream/frame_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "avatar_test_util.h"

namespace lipsync::stream {
namespace {

using testing::ImportTinyAvatar;
using testing::ScratchDir;

const Image& FrameOf(const SourceFrame& f) { return f.decoded ? *f.decoded : f.frame; }

// Reads `count` frames of the ping-pong walk, telling the source what comes next as the stream
// does.
std::vector<SourceFrame> Walk(CachedFrames& frames, const FrameSequence& sequence, int64_t count) {
  std::vector<SourceFrame> out;
  int64_t expected = 0;
  for (int64_t i = 0; i < count; ++i) {
    for (expected = std::max(expected, i + 1); expected <= i + frames.read_ahead(); ++expected) {
      frames.Expect(sequence(expected));
    }
    auto frame = frames.Read(sequence(i));
    EXPECT_TRUE(frame.ok()) << frame.status().ToString();
    if (!frame.ok()) break;
    out.push_back(std::move(*frame));
  }
  return out;
}

TEST(CachedFrames, FramesDecodedAheadEqualFramesDecodedOnRead) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const FaceLayout layout = FaceLayout::ForInputSize(320).value();
  const auto sequence = FrameSequence::Create(avatar.frame_count(), FrameOrder::kPingPong).value();
  const int64_t count = 3 * avatar.frame_count();

  auto plain = CachedFrames::Open(avatar, layout, {});
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ((*plain)->read_ahead(), 0);
  const std::vector<SourceFrame> want = Walk(**plain, sequence, count);
  ASSERT_EQ(static_cast<int64_t>(want.size()), count);
  EXPECT_EQ((*plain)->counts().decoded, count);  // nothing kept
  EXPECT_EQ((*plain)->counts().decoded_ahead, 0);

  // Whether a helper or the read decodes a frame depends on who comes first: walk until the
  // helpers have decoded some (a source whose helpers never decode walks 20 times and fails).
  CachedFramesOptions options;
  options.decode_threads = 2;
  auto ahead = CachedFrames::Open(avatar, layout, options);
  ASSERT_TRUE(ahead.ok()) << ahead.status().ToString();
  EXPECT_EQ((*ahead)->read_ahead(), 4);
  for (int walk = 0; walk < 20 && (*ahead)->counts().decoded_ahead == 0; ++walk) {
    const std::vector<SourceFrame> got = Walk(**ahead, sequence, count);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(FrameOf(got[i]).bgr, FrameOf(want[i]).bgr) << "output frame " << i;
      ASSERT_EQ(got[i].crop.bgr, want[i].crop.bgr) << "output frame " << i;
      ASSERT_EQ(got[i].rect, want[i].rect) << "output frame " << i;
    }
  }
  const CachedFrames::Counts counts = (*ahead)->counts();
  EXPECT_GT(counts.decoded_ahead, 0);
  EXPECT_LE(counts.decoded_ahead, counts.decoded);
  EXPECT_EQ(counts.kept_hits, 0);
}

// Kept frames are shared, not copied, and the crop handed out is the caller's own.
TEST(CachedFrames, KeptFramesAreSharedAndTheirCropsCopied) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const FaceLayout layout = FaceLayout::ForInputSize(320).value();
  CachedFramesOptions options;
  options.cache_bytes = 64 << 20;
  auto frames = CachedFrames::Open(avatar, layout, options);
  ASSERT_TRUE(frames.ok()) << frames.status().ToString();
  auto first = (*frames)->Read(2);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  first->crop.bgr.assign(first->crop.bgr.size(), 7);  // pasted into by its reader
  auto again = (*frames)->Read(2);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ASSERT_TRUE(first->decoded && again->decoded);
  EXPECT_EQ(first->decoded.get(), again->decoded.get());
  EXPECT_NE(again->crop.bgr, first->crop.bgr);
  EXPECT_EQ((*frames)->counts().decoded, 1);
  EXPECT_EQ((*frames)->counts().kept_hits, 1);
}

// A source closed right after it was told of many frames waits for no more than the decodes
// under way.
TEST(CachedFrames, ClosesWithFramesStillQueued) {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const FaceLayout layout = FaceLayout::ForInputSize(320).value();
  CachedFramesOptions options;
  options.decode_threads = 3;
  for (int round = 0; round < 10; ++round) {
    auto frames = CachedFrames::Open(avatar, layout, options);
    ASSERT_TRUE(frames.ok()) << frames.status().ToString();
    for (int64_t i = 0; i < avatar.frame_count(); ++i) (*frames)->Expect(i);
    (*frames)->Expect(-1);                    // outside the avatar: ignored
    (*frames)->Expect(avatar.frame_count());  // likewise
    if (round % 2) {
      ASSERT_TRUE((*frames)->Read(1).ok());
    }
    EXPECT_LE((*frames)->counts().decoded, (*frames)->read_ahead() + 1);
  }
  auto frames = CachedFrames::Open(avatar, layout, options);
  auto outside = (*frames)->Read(avatar.frame_count());
  EXPECT_EQ(outside.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync::stream
