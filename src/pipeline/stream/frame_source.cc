#include "pipeline/stream/frame_source.h"

#include <algorithm>
#include <string>

#include "core/platform.h"
#include "runtime/catch_all.h"

namespace lipsync::stream {

Status CheckFrameIndex(int64_t index, int64_t count) {
  if (index >= 0 && index < count) return Status::Ok();
  return InvalidArgument("avatar frame " + std::to_string(index) + " is outside 0.." +
                         std::to_string(count - 1));
}

Result<std::unique_ptr<CachedFrames>> CachedFrames::Open(const Avatar& avatar,
                                                         const FaceLayout& layout,
                                                         const CachedFramesOptions& options) {
  LIPSYNC_ASSIGN_OR_RETURN(auto reader, avatar.OpenFrames(options.reader));
  std::unique_ptr<CachedFrames> frames(
      new CachedFrames(avatar, layout, std::move(reader), options.cache_bytes));
  // A video is decoded in order by one reader: more than one helper would only queue on it.
  const int helpers =
      avatar.frames_are_video() ? std::min(options.decode_threads, 1) : options.decode_threads;
  for (int i = 0; i < helpers; ++i) {
    frames->helpers_.emplace_back([f = frames.get(), nice = options.nice] {
      platform::NameThisThread("frame-decode");
      platform::LowerThisThreadPriority(nice);
      f->Help();
    });
  }
  return frames;
}

CachedFrames::~CachedFrames() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (auto& helper : helpers_) helper.join();
}

Result<CachedFrames::Decoded> CachedFrames::Decode(int64_t index) {
  Lock reading(reader_mu_, std::defer_lock);
  if (avatar_.frames_are_video()) reading.lock();
  auto frame = reader_->Read(index);
  if (reading.owns_lock()) reading.unlock();
  if (!frame.ok()) return frame.status().WithContext("avatar '" + avatar_.dir() + "'");
  const CropRect& rect = avatar_.crop_rects()[static_cast<size_t>(index)];
  auto crop = CropFace(*frame, rect, layout_);
  if (!crop.ok()) return crop.status().WithContext("avatar frame " + std::to_string(index));
  return Decoded{std::make_shared<Image>(std::move(*frame)), std::move(*crop)};
}

void CachedFrames::Help() {
  Lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const int64_t index = queue_.front();
    queue_.pop_front();
    auto it = ahead_.find(index);
    if (it == ahead_.end() || it->second->claimed) continue;  // Read came first and decoded it
    std::shared_ptr<Ahead> ahead = it->second;
    ahead->claimed = true;
    lock.unlock();
    Result<Decoded> decoded = Internal("not decoded");
    const Status status = runtime::CatchAll("decoding avatar frames", [&] {
      decoded = Decode(index);
      return Status::Ok();
    });
    lock.lock();
    ahead->result = status.ok() ? std::move(decoded) : Result<Decoded>(status);
    ahead->done = true;
    counts_.decoded++;
    counts_.decoded_ahead++;
    done_cv_.notify_all();
  }
}

void CachedFrames::Expect(int64_t index) {
  if (helpers_.empty() || index < 0 || index >= avatar_.frame_count()) return;
  {
    std::lock_guard lock(mu_);
    if (auto hit = kept_.find(index); hit != kept_.end()) {
      order_.splice(order_.begin(), order_, hit->second.second);  // so that it stays until read
      return;
    }
    // At most read_ahead() frames wait for their Read (a frame's memory each).
    if (ahead_.count(index) || ahead_.size() >= static_cast<size_t>(read_ahead())) return;
    ahead_.emplace(index, std::make_shared<Ahead>());
    queue_.push_back(index);
  }
  work_cv_.notify_one();
}

Result<SourceFrame> CachedFrames::Read(int64_t index) {
  LIPSYNC_RETURN_IF_ERROR(CheckFrameIndex(index, avatar_.frame_count()));
  Lock lock(mu_);
  if (auto hit = kept_.find(index); hit != kept_.end()) {
    order_.splice(order_.begin(), order_, hit->second.second);
    counts_.kept_hits++;
    return Give(index, hit->second.first, /*kept=*/true);
  }
  Result<Decoded> decoded = Internal("not decoded");
  if (auto it = ahead_.find(index); it != ahead_.end() && it->second->claimed) {
    std::shared_ptr<Ahead> ahead = it->second;
    done_cv_.wait(lock, [&] { return ahead->done; });
    decoded = std::move(ahead->result);
    ahead_.erase(index);
  } else {
    // Still queued: decoded here rather than waited for; the helper finds no entry and skips it.
    if (it != ahead_.end()) ahead_.erase(it);
    lock.unlock();
    decoded = Decode(index);
    lock.lock();
    counts_.decoded++;
  }
  if (!decoded.ok()) return decoded.status();
  const bool kept = KeepLocked(index, *decoded);
  return Give(index, *decoded, kept);
}

SourceFrame CachedFrames::Give(int64_t index, Decoded& decoded, bool kept) const {
  SourceFrame out;
  out.rect = avatar_.crop_rects()[static_cast<size_t>(index)];
  if (kept) {
    out.decoded = decoded.frame;
    out.crop = decoded.crop;  // the stream pastes into it
  } else {
    out.frame = std::move(*decoded.frame);
    out.crop = std::move(decoded.crop);
  }
  return out;
}

bool CachedFrames::KeepLocked(int64_t index, const Decoded& decoded) {
  const size_t bytes = decoded.frame->bgr.size() + decoded.crop.bgr.size();
  if (bytes > budget_) return false;
  while (used_ + bytes > budget_ && !order_.empty()) {
    auto last = kept_.find(order_.back());
    used_ -= last->second.first.frame->bgr.size() + last->second.first.crop.bgr.size();
    kept_.erase(last);
    order_.pop_back();
  }
  order_.push_front(index);
  kept_.emplace(index, std::make_pair(decoded, order_.begin()));
  used_ += bytes;
  return true;
}

CachedFrames::Counts CachedFrames::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

}  // namespace lipsync::stream
