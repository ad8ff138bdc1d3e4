// Where a lip-sync stream's avatar frames come from: each whole frame with its face crop and
// rectangle. The server keeps its avatars' frames in memory (StoredFrames, stored_frames.h);
// render decodes them from the avatar's files, ahead of the walk on helper threads, and keeps the
// recent ones (CachedFrames, here).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "lipsync/avatar.h"
#include "lipsync/frames.h"
#include "pipeline/stream/frame_store.h"

namespace lipsync::stream {

// One avatar frame as the stream uses it: the crop is pasted into, and then the frame: `frame`,
// or when `decoded` is set a copy of it made at paste time, or when `store` is set frame
// `store_index` of it, copied or decoded at paste time (so that a frame waiting for its batch
// holds only its crop, and a kept frame is not copied or decoded on the frames stage's thread).
struct SourceFrame {
  Image frame;
  std::shared_ptr<const Image> decoded;
  const FrameStore* store = nullptr;
  int64_t store_index = -1;
  Image crop;  // CropFace(frame, rect, layout); empty when the source leaves it to paste time
  CropRect rect;
};

// kInvalidArgument unless 0 <= index < count.
Status CheckFrameIndex(int64_t index, int64_t count);

class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // Avatar frame `index` (0 <= index < the avatar's frame count), a copy the caller may change.
  virtual Result<SourceFrame> Read(int64_t index) = 0;
  // How many frames ahead of the one being read the source wants to hear of (0: none), and the
  // word that Read(index) will come soon, so that it may start on it now.
  virtual int read_ahead() const { return 0; }
  virtual void Expect(int64_t /*index*/) {}
};

struct CachedFramesOptions {
  FrameReaderOptions reader;
  // Decoded frames and their crops kept for reuse, least recently used dropped first.
  size_t cache_bytes = 0;
  // Helper threads that decode the frames the stream says come next (up to two frames per thread
  // ahead, a frame's memory each), named "frame-decode" and `nice` lower in priority (Linux).
  int decode_threads = 0;
  int nice = 0;
};

// An avatar's frame files or video, decoded (and its face cropped) when first read, or before on
// the helper threads. Frames are kept for reuse, as the walk over the avatar comes back to them:
// a short avatar is decoded once; a long one costs bounded memory, and its decoding is spread over
// the helpers. A video's frames are decoded one at a time (its reader walks the file), still off
// the reader's thread. Read and Expect come from one thread at a time (the stream's Prepare).
class CachedFrames final : public FrameSource {
 public:
  static Result<std::unique_ptr<CachedFrames>> Open(const Avatar& avatar, const FaceLayout& layout,
                                                    const CachedFramesOptions& options);
  ~CachedFrames() override;
  Result<SourceFrame> Read(int64_t index) override;
  int read_ahead() const override { return 2 * static_cast<int>(helpers_.size()); }
  void Expect(int64_t index) override;

  struct Counts {
    int64_t decoded = 0;        // frames decoded, by the helpers or by Read
    int64_t decoded_ahead = 0;  // of them by the helpers
    int64_t kept_hits = 0;      // reads answered from the kept frames
  };
  Counts counts() const;

 private:
  // A decoded frame and its crop.
  struct Decoded {
    std::shared_ptr<Image> frame;
    Image crop;
  };
  // A frame a helper was asked for: claimed by whoever decodes it first, done when decoded.
  struct Ahead {
    bool claimed = false, done = false;
    Result<Decoded> result = Internal("not decoded");
  };
  using Lock = std::unique_lock<std::mutex>;

  CachedFrames(const Avatar& avatar, const FaceLayout& layout, std::unique_ptr<FrameReader> reader,
               size_t cache_bytes)
      : avatar_(avatar), layout_(layout), reader_(std::move(reader)), budget_(cache_bytes) {}
  Result<Decoded> Decode(int64_t index);
  void Help();
  // The frame for the caller; a copy of a kept one's crop, the frame itself shared.
  SourceFrame Give(int64_t index, Decoded& decoded, bool kept) const;
  bool KeepLocked(int64_t index, const Decoded& decoded);

  const Avatar& avatar_;
  FaceLayout layout_;
  std::unique_ptr<FrameReader> reader_;
  std::mutex reader_mu_;  // held around a video reader, which cannot decode two frames at once

  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  size_t budget_;
  size_t used_ = 0;
  std::list<int64_t> order_;  // most recently used first
  std::unordered_map<int64_t, std::pair<Decoded, std::list<int64_t>::iterator>> kept_;
  std::deque<int64_t> queue_;  // frames for the helpers, first asked first
  std::unordered_map<int64_t, std::shared_ptr<Ahead>> ahead_;
  Counts counts_;
  bool stopping_ = false;
  std::vector<std::thread> helpers_;
};

}  // namespace lipsync::stream
