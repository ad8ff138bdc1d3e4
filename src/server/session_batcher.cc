#include "server/session_batcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "server/avatar_faces.h"

namespace lipsync::server {
namespace {

constexpr size_t kWindowValues = 32 * 16 * 16;

}  // namespace

void FairGate::Enter() {
  std::unique_lock lock(mu_);
  const uint64_t ticket = next_++;
  cv_.wait(lock, [&] { return ticket - left_ < capacity_; });
}

void FairGate::Leave() {
  {
    std::lock_guard lock(mu_);
    ++left_;
  }
  cv_.notify_all();
}

void FairGate::Widen(int capacity) {
  {
    std::lock_guard lock(mu_);
    capacity_ = std::max<uint64_t>(capacity_, static_cast<uint64_t>(std::max(capacity, 1)));
  }
  cv_.notify_all();
}

uint64_t FairGate::waiting() const {
  std::lock_guard lock(mu_);
  const uint64_t inside = next_ - left_;
  return inside > capacity_ ? inside - capacity_ : 0;
}

AvatarBatcher::AvatarBatcher(std::shared_ptr<LoadedAvatar> avatar, int max_batch, FairGate* gate,
                             Metrics* metrics)
    : avatar_(std::move(avatar)), max_batch_(max_batch), gate_(gate), metrics_(metrics) {
  const ModelInfo& info = avatar_->unet->info();
  if (!info.dynamic_batch) {  // the model's own batch, short batches padded (as render does)
    max_batch_ = static_cast<int>(info.inputs[avatar_->roles.visual].shape[0]);
  } else {
    max_batch_ = static_cast<int>(std::clamp<int64_t>(max_batch_, 1, info.max_batch));
  }
  const int64_t s = avatar_->layout.inner_size;
  faces_ = Tensor::Uninitialized(DataType::kUInt8, {max_batch_, s, s, 3});
  audio_ = Tensor::Uninitialized(DataType::kFloat32, {max_batch_, 32, 16, 16});
  output_ = Tensor::Uninitialized(DataType::kUInt8, {max_batch_, s, s, 3});
  thread_ = std::thread([this] { Loop(); });
}

AvatarBatcher::~AvatarBatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  for (auto& group : queue_) Complete(*group, Status(StatusCode::kCancelled, "session closed"));
}

void AvatarBatcher::Submit(std::shared_ptr<FrameGroup> group) {
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(group));
  }
  cv_.notify_one();
}

void AvatarBatcher::Complete(FrameGroup& group, const Status& status) {
  {
    std::lock_guard lock(group.signal->mu);
    if (group.done) return;
    group.done = true;
    group.status = status;
  }
  group.signal->cv.notify_all();
}

void AvatarBatcher::Loop() {
  std::vector<Slot> slots;
  std::vector<std::shared_ptr<FrameGroup>> touched;  // kept alive until their frames have run
  for (;;) {
    slots.clear();
    touched.clear();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // Take what waits, in arrival order, up to a batch.
      while (!queue_.empty() && static_cast<int>(slots.size()) < max_batch_) {
        auto& group = queue_.front();
        if (group->cancelled) {
          Complete(*group, Status(StatusCode::kCancelled, "session cancelled"));
          queue_.pop_front();
          continue;
        }
        if (touched.empty() || touched.back() != group) touched.push_back(group);
        while (group->taken < group->jobs.size() && static_cast<int>(slots.size()) < max_batch_) {
          slots.push_back({group.get(), group->taken++});
        }
        if (group->taken == group->jobs.size()) queue_.pop_front();
      }
    }
    if (slots.empty()) continue;
    gate_->Enter();
    const Status ran = RunBatch(slots);
    gate_->Leave();
    for (const Slot& slot : slots) slot.group->finished++;
    for (auto& group : touched) {
      if (!ran.ok()) {
        group->cancelled = true;  // its remaining frames are not run
        Complete(*group, ran);
      } else if (group->finished == group->jobs.size()) {
        Complete(*group, Status::Ok());
      }
    }
  }
}

// The frames of several sessions through the avatar's UNet as one batch (RunAvatarFaces: the
// frame form, as render's inference step on a GPU; the same bytes as render gives).
Status AvatarBatcher::RunBatch(const std::vector<Slot>& slots) {
  LoadedAvatar& a = *avatar_;
  const int s = a.layout.inner_size;
  const size_t face_size = static_cast<size_t>(s) * s * 3;
  const int64_t n = static_cast<int64_t>(slots.size());
  for (int64_t k = 0; k < n; ++k) {
    const SessionFrameJob& job = slots[static_cast<size_t>(k)].group->jobs[slots[k].job];
    std::memcpy(faces_.data_as<uint8_t>() + k * face_size, job.face.data(), face_size);
    std::memcpy(audio_.data_as<float>() + k * kWindowValues, job.audio.data(),
                kWindowValues * sizeof(float));
  }
  const TensorView faces{DataType::kUInt8, {n, s, s, 3}, faces_.data()};
  const TensorView audio{DataType::kFloat32, {n, 32, 16, 16}, audio_.data()};
  const auto start = std::chrono::steady_clock::now();
  Status ran = RunAvatarFaces(a, faces, audio, output_.data_as<uint8_t>());
  if (!ran.ok()) {
    spdlog::warn("session batch on avatar '{}' failed: {}", a.id, ran.ToString());
    return ran.WithContext("avatar '" + a.id + "' model");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  metrics_->AddFrames(static_cast<int>(n));
  std::vector<const SessionSignal*> sessions;  // a session's groups share its signal
  for (const Slot& slot : slots) {
    const SessionSignal* signal = slot.group->signal.get();
    if (std::find(sessions.begin(), sessions.end(), signal) == sessions.end()) {
      sessions.push_back(signal);
    }
  }
  metrics_->RecordSessionBatch(static_cast<int>(n), static_cast<int>(sessions.size()), seconds);
  const auto us = static_cast<int64_t>(seconds * 1e6);
  a.inference_us.fetch_add(us);
  a.totals->inference_us.fetch_add(us);
  for (int64_t k = 0; k < n; ++k) {
    SessionFrameJob& job = slots[static_cast<size_t>(k)].group->jobs[slots[k].job];
    job.face.assign(output_.data_as<uint8_t>() + k * face_size,
                    output_.data_as<uint8_t>() + (k + 1) * face_size);
  }
  return Status::Ok();
}

std::shared_ptr<AvatarBatcher> SessionBatchers::Acquire(
    const std::shared_ptr<LoadedAvatar>& avatar) {
  std::lock_guard lock(mu_);
  for (auto it = batchers_.begin(); it != batchers_.end();) {
    it = it->second.expired() ? batchers_.erase(it) : std::next(it);
  }
  if (auto found = batchers_[avatar.get()].lock()) return found;
  // A GPU backend overlaps the runs of several avatars (one CUDA stream each).
  gate_.Widen(avatar->unet->capabilities().overlapping_runs);
  auto batcher = std::make_shared<AvatarBatcher>(avatar, max_batch_, &gate_, metrics_);
  batchers_[avatar.get()] = batcher;
  return batcher;
}

int SessionBatchers::active() const {
  std::lock_guard lock(mu_);
  int n = 0;
  for (const auto& [key, batcher] : batchers_) n += batcher.expired() ? 0 : 1;
  return n;
}

}  // namespace lipsync::server
