// A loaded avatar's frames, held in memory (FrameStore), as a stream's frame source. A frame kept
// decoded is cropped on read; one kept encoded is decoded for its crop, on read or, given a pool
// to decode on, ahead of the walk, so that a live session's chunk finds its frames decoded.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "pipeline/stream/frame_source.h"

namespace lipsync::stream {

// Runs a piece of work on another thread (a worker pool's Post), now or later.
using Executor = std::function<void(std::function<void()>)>;

struct StoredFramesOptions {
  // The crop is cut on each read; false leaves it to paste time with the frame's copy or decode,
  // for a stream given its faces (which needs none before; the pastes run in parallel where the
  // reads do not).
  bool crops = true;
  // Encoded frames with crops: up to `decode_ahead` of the frames the stream says come next are
  // decoded and cropped on `executor` (a decoded frame's memory each) until read.
  Executor executor;
  int decode_ahead = 0;

  static StoredFramesOptions WithoutCrops() {
    StoredFramesOptions options;
    options.crops = false;
    return options;
  }
};

// The store and the rectangles must outlive the source. Read and Expect come from one thread at a
// time (the stream's Prepare). Destruction drops the decodes not yet started and waits for those
// under way.
class StoredFrames final : public FrameSource {
 public:
  StoredFrames(const FrameStore& frames, const std::vector<CropRect>& rects,
               const FaceLayout& layout, StoredFramesOptions options = {});
  ~StoredFrames() override;
  StoredFrames(const StoredFrames&) = delete;
  StoredFrames& operator=(const StoredFrames&) = delete;

  Result<SourceFrame> Read(int64_t index) override;
  int read_ahead() const override;
  void Expect(int64_t index) override;

  struct Counts {
    int64_t decoded_ahead = 0;  // reads answered by a decode made ahead
    int64_t decoded_on_read = 0;
  };
  Counts counts() const;

 private:
  struct Ahead;  // the decodes asked for, shared with the executor's work

  const FrameStore& frames_;
  const std::vector<CropRect>& rects_;
  FaceLayout layout_;
  StoredFramesOptions options_;
  std::shared_ptr<Ahead> ahead_;  // null unless frames are decoded ahead
};

}  // namespace lipsync::stream
