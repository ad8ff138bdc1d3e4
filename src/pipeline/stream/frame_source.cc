#include "pipeline/stream/frame_source.h"

#include <string>

namespace lipsync::stream {

Result<SourceFrame> DecodedFrames::Read(int64_t index) {
  if (index < 0 || index >= static_cast<int64_t>(frames_.size())) {
    return InvalidArgument("avatar frame " + std::to_string(index) + " is outside 0.." +
                           std::to_string(static_cast<int64_t>(frames_.size()) - 1));
  }
  SourceFrame out;
  out.rect = rects_[static_cast<size_t>(index)];
  out.decoded = &frames_[static_cast<size_t>(index)];
  if (!crops_) return out;
  auto crop = CropFace(*out.decoded, out.rect, layout_);
  if (!crop.ok()) return crop.status().WithContext("avatar frame " + std::to_string(index));
  out.crop = std::move(*crop);
  return out;
}

Result<std::unique_ptr<CachedFrames>> CachedFrames::Open(const Avatar& avatar,
                                                         const FaceLayout& layout,
                                                         const FrameReaderOptions& options,
                                                         size_t cache_bytes) {
  LIPSYNC_ASSIGN_OR_RETURN(auto reader, avatar.OpenFrames(options));
  return std::unique_ptr<CachedFrames>(
      new CachedFrames(avatar, layout, std::move(reader), cache_bytes));
}

Result<SourceFrame> CachedFrames::Read(int64_t index) {
  auto hit = kept_.find(index);
  if (hit != kept_.end()) {
    order_.splice(order_.begin(), order_, hit->second.second);
    return hit->second.first;  // a copy: the stream pastes into it
  }
  SourceFrame out;
  auto frame = reader_->Read(index);
  if (!frame.ok()) return frame.status().WithContext("avatar '" + avatar_.dir() + "'");
  out.rect = avatar_.crop_rects()[static_cast<size_t>(index)];
  auto crop = CropFace(*frame, out.rect, layout_);
  if (!crop.ok()) return crop.status().WithContext("avatar frame " + std::to_string(index));
  out.frame = std::move(*frame);
  out.crop = std::move(*crop);
  Keep(index, out);
  return out;
}

void CachedFrames::Keep(int64_t index, const SourceFrame& frame) {
  const size_t bytes = frame.frame.bgr.size() + frame.crop.bgr.size();
  if (bytes > budget_) return;
  while (used_ + bytes > budget_ && !order_.empty()) {
    auto last = kept_.find(order_.back());
    used_ -= last->second.first.frame.bgr.size() + last->second.first.crop.bgr.size();
    kept_.erase(last);
    order_.pop_back();
  }
  order_.push_front(index);
  kept_.emplace(index, std::make_pair(frame, order_.begin()));
  used_ += bytes;
}

}  // namespace lipsync::stream
