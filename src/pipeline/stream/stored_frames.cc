#include "pipeline/stream/stored_frames.h"

#include <condition_variable>
#include <mutex>
#include <string>
#include <unordered_map>

#include "runtime/catch_all.h"

namespace lipsync::stream {
namespace {

// Frame `index` read and its crop cut (or copied where the store keeps it): a decoded frame in
// place (copied at paste time), an encoded one decoded once.
Result<SourceFrame> ReadWithCrop(const FrameStore& frames, const CropRect& rect,
                                 const FaceLayout& layout, int64_t index) {
  SourceFrame out;
  out.rect = rect;
  if (frames.storage() == FrameStorage::kDecoded) {
    LIPSYNC_ASSIGN_OR_RETURN(out.decoded, frames.Get(index));
  } else {
    LIPSYNC_ASSIGN_OR_RETURN(out.frame, frames.Copy(index));
  }
  if (const Image* kept = frames.crop(index)) {
    out.crop = *kept;  // the stream pastes into its own copy
    return out;
  }
  auto crop = CropFace(out.decoded ? *out.decoded : out.frame, out.rect, layout);
  if (!crop.ok()) return crop.status().WithContext("avatar frame " + std::to_string(index));
  out.crop = std::move(*crop);
  return out;
}

}  // namespace

struct StoredFrames::Ahead {
  // One frame asked for: claimed by whichever comes first, the executor's work or the read.
  struct Slot {
    bool claimed = false, done = false;
    Result<SourceFrame> result = Internal("not decoded");
  };
  std::mutex mu;
  std::condition_variable done_cv;
  std::unordered_map<int64_t, std::shared_ptr<Slot>> slots;
  int running = 0;  // work that claimed a slot and has not finished
  bool closing = false;
  Counts counts;
};

StoredFrames::StoredFrames(const FrameStore& frames, const std::vector<CropRect>& rects,
                           const FaceLayout& layout, StoredFramesOptions options)
    : frames_(frames), rects_(rects), layout_(layout), options_(std::move(options)) {
  if (options_.crops && options_.executor && options_.decode_ahead > 0 &&
      frames_.storage() == FrameStorage::kEncoded) {
    ahead_ = std::make_shared<Ahead>();
  }
}

StoredFrames::~StoredFrames() {
  if (!ahead_) return;
  std::unique_lock lock(ahead_->mu);
  ahead_->closing = true;  // work not yet started finds it and leaves the store alone
  ahead_->done_cv.wait(lock, [&] { return ahead_->running == 0; });
}

int StoredFrames::read_ahead() const { return ahead_ ? options_.decode_ahead : 0; }

void StoredFrames::Expect(int64_t index) {
  if (!ahead_ || !CheckFrameIndex(index, frames_.size()).ok()) return;
  std::shared_ptr<Ahead::Slot> slot;
  {
    std::lock_guard lock(ahead_->mu);
    // A frame the walk comes back to before it is read is decoded once ahead, again on read.
    if (ahead_->slots.count(index) ||
        static_cast<int>(ahead_->slots.size()) >= options_.decode_ahead) {
      return;
    }
    slot = ahead_->slots.emplace(index, std::make_shared<Ahead::Slot>()).first->second;
  }
  options_.executor([ahead = ahead_, slot, store = &frames_,
                     rect = rects_[static_cast<size_t>(index)], layout = layout_, index] {
    {
      std::lock_guard lock(ahead->mu);
      if (ahead->closing || slot->claimed) return;
      slot->claimed = true;
      ++ahead->running;
    }
    // Caught here, as the slot must be done for its Read and the destructor to go on.
    Result<SourceFrame> result = Internal("not decoded");
    const Status status = runtime::CatchAll("decoding avatar frames", [&] {
      result = ReadWithCrop(*store, rect, layout, index);
      return Status::Ok();
    });
    std::lock_guard lock(ahead->mu);
    slot->result = status.ok() ? std::move(result) : Result<SourceFrame>(status);
    slot->done = true;
    --ahead->running;
    ahead->done_cv.notify_all();
  });
}

Result<SourceFrame> StoredFrames::Read(int64_t index) {
  LIPSYNC_RETURN_IF_ERROR(CheckFrameIndex(index, frames_.size()));
  const CropRect& rect = rects_[static_cast<size_t>(index)];
  if (!options_.crops) {
    SourceFrame out;
    out.rect = rect;
    out.store = &frames_;
    out.store_index = index;
    return out;
  }
  if (!ahead_) return ReadWithCrop(frames_, rect, layout_, index);
  std::unique_lock lock(ahead_->mu);
  auto it = ahead_->slots.find(index);
  if (it == ahead_->slots.end() || !it->second->claimed) {  // not started: decoded here
    if (it != ahead_->slots.end()) {
      it->second->claimed = true;
      ahead_->slots.erase(it);
    }
    ++ahead_->counts.decoded_on_read;
    lock.unlock();
    return ReadWithCrop(frames_, rect, layout_, index);
  }
  std::shared_ptr<Ahead::Slot> slot = it->second;
  ahead_->done_cv.wait(lock, [&] { return slot->done; });
  ahead_->slots.erase(index);
  ++ahead_->counts.decoded_ahead;
  return std::move(slot->result);
}

StoredFrames::Counts StoredFrames::counts() const {
  if (!ahead_) return {};
  std::lock_guard lock(ahead_->mu);
  return ahead_->counts;
}

}  // namespace lipsync::stream
