// The frame sources on their own: render's CachedFrames and the server's StoredFrames, frames
// decoded ahead (on helper threads, on an executor) against frames decoded on read, and a source
// closed while decodes are still queued. (Through render: render_test.cc; through sessions:
// session_test.cc.)
#include "pipeline/stream/frame_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "avatar_test_util.h"
#include "pipeline/stream/stored_frames.h"

namespace lipsync::stream {
namespace {

using testing::ImportTinyAvatar;
using testing::ScratchDir;

const Image& FrameOf(const SourceFrame& f) { return f.decoded ? *f.decoded : f.frame; }

// Reads `count` frames of the ping-pong walk, telling the source what comes next as the stream
// does.
std::vector<SourceFrame> Walk(FrameSource& frames, const FrameSequence& sequence, int64_t count) {
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

// The tiny avatar, its frames held decoded and as PNG bytes.
struct TinyStores {
  ScratchDir dir;
  const Avatar avatar = ImportTinyAvatar(dir);
  const FaceLayout layout = FaceLayout::ForInputSize(320).value();
  FrameStore decoded, encoded;
  // The encoded frames, up to `ahead` of them decoded on `executor`.
  StoredFrames EncodedAhead(Executor executor, int ahead) const {
    StoredFramesOptions options;
    options.executor = std::move(executor);
    options.decode_ahead = ahead;
    return StoredFrames(encoded, avatar.crop_rects(), layout, options);
  }
  TinyStores() {
    auto reader = avatar.OpenFrames();
    std::vector<Image> images;
    std::vector<std::string> files;
    for (int64_t i = 0; i < avatar.frame_count(); ++i) {
      images.push_back((*reader)->Read(i).value());
      files.push_back(EncodePng(images.back()).value());
    }
    encoded = FrameStore::Encoded(std::move(files), avatar.width(), avatar.height());
    decoded = FrameStore::Decoded(std::move(images));
  }
};

// Work kept until the test runs it.
struct QueuedWork {
  std::deque<std::function<void()>> queue;
  Executor executor() {
    return [this](std::function<void()> work) { queue.push_back(std::move(work)); };
  }
  void RunAll() {
    while (!queue.empty()) {
      auto work = std::move(queue.front());
      queue.pop_front();
      work();
    }
  }
};

TEST(StoredFrames, EncodedFramesDecodedAheadEqualDecodedFramesRead) {
  const TinyStores stores;
  const Avatar& avatar = stores.avatar;
  const FaceLayout& layout = stores.layout;
  const auto sequence = FrameSequence::Create(avatar.frame_count(), FrameOrder::kPingPong).value();
  const int64_t count = 3 * avatar.frame_count();
  StoredFrames plain(stores.decoded, avatar.crop_rects(), layout);
  EXPECT_EQ(plain.read_ahead(), 0);
  const std::vector<SourceFrame> want = Walk(plain, sequence, count);
  ASSERT_EQ(static_cast<int64_t>(want.size()), count);

  // Decoded where the stream says they come: every frame but the walk's returns is ready on read.
  StoredFramesOptions options;
  options.executor = [](std::function<void()> work) { work(); };
  options.decode_ahead = 3;
  StoredFrames ahead(stores.encoded, avatar.crop_rects(), layout, options);
  EXPECT_EQ(ahead.read_ahead(), 3);
  const std::vector<SourceFrame> got = Walk(ahead, sequence, count);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(FrameOf(got[i]).bgr, FrameOf(want[i]).bgr) << "output frame " << i;
    ASSERT_EQ(got[i].crop.bgr, want[i].crop.bgr) << "output frame " << i;
    ASSERT_EQ(got[i].rect, want[i].rect) << "output frame " << i;
  }
  const StoredFrames::Counts counts = ahead.counts();
  EXPECT_GT(counts.decoded_ahead, count / 2);
  EXPECT_EQ(counts.decoded_ahead + counts.decoded_on_read, count);

  // Frames kept decoded, or read without crops, are not decoded ahead.
  EXPECT_EQ(StoredFrames(stores.decoded, avatar.crop_rects(), layout, options).read_ahead(), 0);
  StoredFramesOptions uncropped = options;
  uncropped.crops = false;
  EXPECT_EQ(StoredFrames(stores.encoded, avatar.crop_rects(), layout, uncropped).read_ahead(), 0);
}

// A read that comes before the work decodes the frame itself; the work then does nothing. At most
// `decode_ahead` frames are asked for at once.
TEST(StoredFrames, AReadBeforeTheWorkDecodesItselfAndAheadIsBounded) {
  const TinyStores stores;
  const Avatar& avatar = stores.avatar;
  ASSERT_GE(avatar.frame_count(), 4);
  QueuedWork work;
  StoredFrames frames = stores.EncodedAhead(work.executor(), 2);
  for (int64_t i = 0; i < 4; ++i) frames.Expect(i);
  frames.Expect(1);                     // already asked for
  frames.Expect(avatar.frame_count());  // outside the avatar
  EXPECT_EQ(work.queue.size(), 2u);
  ASSERT_TRUE(frames.Read(0).ok());
  EXPECT_EQ(frames.counts().decoded_on_read, 1);
  work.RunAll();  // frame 0's work finds it claimed; frame 1 is decoded
  ASSERT_TRUE(frames.Read(1).ok());
  EXPECT_EQ(frames.counts().decoded_ahead, 1);
  EXPECT_EQ(frames.counts().decoded_on_read, 1);
  EXPECT_EQ(frames.Read(avatar.frame_count()).status().code(), StatusCode::kInvalidArgument);
}

// A source closed with decodes queued or under way: the queued ones find it closed, the destructor
// waits for those under way.
TEST(StoredFrames, ClosesWithDecodesStillQueued) {
  const TinyStores stores;
  const Avatar& avatar = stores.avatar;
  QueuedWork queued;
  {
    StoredFrames frames = stores.EncodedAhead(queued.executor(), 4);
    for (int64_t i = 0; i < avatar.frame_count(); ++i) frames.Expect(i);
    ASSERT_EQ(queued.queue.size(), 4u);
  }
  queued.RunAll();
  for (int round = 0; round < 10; ++round) {
    std::vector<std::thread> threads;
    {
      StoredFrames frames = stores.EncodedAhead(
          [&threads](std::function<void()> work) { threads.emplace_back(std::move(work)); }, 4);
      for (int64_t i = 0; i < avatar.frame_count(); ++i) frames.Expect(i);
      if (round % 2) {
        ASSERT_TRUE(frames.Read(1).ok());
      }
    }
    for (auto& t : threads) t.join();
  }
}

// A store that keeps the crops of its decoded frames gives each read a copy of the frame's crop
// (one the stream may paste into) and cuts none; a store given a crop count other than its frames'
// keeps none.
TEST(StoredFrames, ACropTheStoreKeepsIsCopiedNotCutAgain) {
  const TinyStores stores;
  const Avatar& avatar = stores.avatar;
  const int64_t n = avatar.frame_count();
  std::vector<Image> images, marked;
  for (int64_t i = 0; i < n; ++i) {
    images.push_back(*stores.decoded.Get(i).value());
    const int c = stores.layout.crop_size;
    marked.push_back(Image{
        c, c,
        std::vector<uint8_t>(static_cast<size_t>(c) * c * 3, static_cast<uint8_t>(30 + 11 * i))});
  }
  const FrameStore store = FrameStore::Decoded(images, marked);
  EXPECT_EQ(store.bytes(), stores.decoded.bytes() + n * static_cast<int64_t>(marked[0].bgr.size()));
  StoredFrames frames(store, avatar.crop_rects(), stores.layout);
  for (int64_t i = 0; i < n; ++i) {
    auto got = frames.Read(i);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(got->crop.bgr, marked[static_cast<size_t>(i)].bgr) << "frame " << i;
    std::fill(got->crop.bgr.begin(), got->crop.bgr.end(), uint8_t{0});  // the reader's own copy
    EXPECT_EQ(store.crop(i)->bgr, marked[static_cast<size_t>(i)].bgr) << "frame " << i;
  }
  EXPECT_EQ(store.crop(n), nullptr);
  EXPECT_EQ(store.crop(-1), nullptr);

  const FrameStore short_of_crops = FrameStore::Decoded(images, {marked[0]});
  EXPECT_EQ(short_of_crops.crop(0), nullptr);
  EXPECT_EQ(short_of_crops.bytes(), stores.decoded.bytes());
}

}  // namespace
}  // namespace lipsync::stream
