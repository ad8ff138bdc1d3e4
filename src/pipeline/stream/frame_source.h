// Where a lip-sync stream's avatar frames come from: each whole frame with its face crop and
// rectangle. The server keeps its avatars' frames decoded in memory; render decodes them from the
// avatar's files as the walk reaches them and keeps the recent ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <unordered_map>
#include <vector>

#include "lipsync/avatar.h"
#include "lipsync/frames.h"

namespace lipsync::stream {

// One avatar frame as the stream uses it: the crop is pasted into, and then the frame: `frame`,
// or when `decoded` is set a copy of it made at paste time (so that a frame waiting for its batch
// holds only its crop).
struct SourceFrame {
  Image frame;
  const Image* decoded = nullptr;
  Image crop;  // CropFace(frame, rect, layout); empty when the source leaves it to paste time
  CropRect rect;
};

class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // Avatar frame `index` (0 <= index < the avatar's frame count), a copy the caller may change.
  virtual Result<SourceFrame> Read(int64_t index) = 0;
};

// Frames already decoded (a loaded avatar's); the crop is cut on each read, or with `crops` false
// left to paste time, for a stream given its faces (which needs none before; the pastes run in
// parallel where the reads do not). The vectors must outlive the source.
class DecodedFrames final : public FrameSource {
 public:
  DecodedFrames(const std::vector<Image>& frames, const std::vector<CropRect>& rects,
                const FaceLayout& layout, bool crops = true)
      : frames_(frames), rects_(rects), layout_(layout), crops_(crops) {}
  Result<SourceFrame> Read(int64_t index) override;

 private:
  const std::vector<Image>& frames_;
  const std::vector<CropRect>& rects_;
  FaceLayout layout_;
  bool crops_;
};

// An avatar's frame files or video, decoded when first read; frames and their crops are kept for
// reuse, as the walk over the avatar comes back to them, up to `cache_bytes`, least recently used
// dropped first. A short avatar is then decoded once; a long one costs bounded memory.
class CachedFrames final : public FrameSource {
 public:
  static Result<std::unique_ptr<CachedFrames>> Open(const Avatar& avatar, const FaceLayout& layout,
                                                    const FrameReaderOptions& options,
                                                    size_t cache_bytes);
  Result<SourceFrame> Read(int64_t index) override;

 private:
  CachedFrames(const Avatar& avatar, const FaceLayout& layout, std::unique_ptr<FrameReader> reader,
               size_t cache_bytes)
      : avatar_(avatar), layout_(layout), reader_(std::move(reader)), budget_(cache_bytes) {}
  void Keep(int64_t index, const SourceFrame& frame);

  const Avatar& avatar_;
  FaceLayout layout_;
  std::unique_ptr<FrameReader> reader_;
  size_t budget_;
  size_t used_ = 0;
  std::list<int64_t> order_;  // most recently used first
  std::unordered_map<int64_t, std::pair<SourceFrame, std::list<int64_t>::iterator>> kept_;
};

}  // namespace lipsync::stream
