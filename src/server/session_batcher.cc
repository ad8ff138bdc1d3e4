#include "server/session_batcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace lipsync::server {
namespace {

constexpr size_t kWindowValues = 32 * 16 * 16;

}  // namespace

void FairGate::Enter() {
  std::unique_lock lock(mu_);
  const uint64_t ticket = next_++;
  cv_.wait(lock, [&] { return serving_ == ticket; });
}

void FairGate::Leave() {
  {
    std::lock_guard lock(mu_);
    ++serving_;
  }
  cv_.notify_all();
}

uint64_t FairGate::waiting() const {
  std::lock_guard lock(mu_);
  return next_ - serving_ - (next_ > serving_ ? 1 : 0);
}

AvatarBatcher::AvatarBatcher(std::shared_ptr<LoadedAvatar> avatar, int max_batch, FairGate* gate,
                             Metrics* metrics)
    : avatar_(std::move(avatar)), max_batch_(max_batch), gate_(gate), metrics_(metrics) {
  const ModelInfo& info = avatar_->unet->info();
  if (!info.dynamic_batch) {  // the model's own batch, short batches padded (as render does)
    max_batch_ = static_cast<int>(info.inputs[avatar_->roles.visual].shape[0]);
    pad_batches_ = true;
  } else {
    max_batch_ = static_cast<int>(std::clamp<int64_t>(max_batch_, 1, info.max_batch));
  }
  const int64_t s = avatar_->layout.inner_size;
  visual_ = Tensor::Uninitialized(DataType::kFloat32, {max_batch_, 6, s, s});
  audio_ = Tensor::Uninitialized(DataType::kFloat32, {max_batch_, 32, 16, 16});
  output_ = Tensor::Uninitialized(DataType::kFloat32, {max_batch_, 3, s, s});
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

// The render pipeline's inference step (render_stages.cc) on frames of several sessions: the
// same input filling, model run and output conversion, so the frames are the same.
Status AvatarBatcher::RunBatch(const std::vector<Slot>& slots) {
  LoadedAvatar& a = *avatar_;
  const int s = a.layout.inner_size;
  const size_t visual_size = static_cast<size_t>(6) * s * s;
  const size_t output_size = static_cast<size_t>(3) * s * s;
  const int64_t n = static_cast<int64_t>(slots.size());
  for (int64_t k = 0; k < n; ++k) {
    const SessionFrameJob& job = slots[static_cast<size_t>(k)].group->jobs[slots[k].job];
    FillVisualInput(job.face.data(), a.layout, visual_.data_as<float>() + k * visual_size);
    std::memcpy(audio_.data_as<float>() + k * kWindowValues, job.audio.data(),
                kWindowValues * sizeof(float));
  }
  const int64_t run = pad_batches_ ? max_batch_ : n;
  for (int64_t k = n; k < run; ++k) {  // a fixed-batch model: repeat the last frame
    std::memcpy(visual_.data_as<float>() + k * visual_size,
                visual_.data_as<float>() + (n - 1) * visual_size, visual_size * sizeof(float));
    std::memcpy(audio_.data_as<float>() + k * kWindowValues,
                audio_.data_as<float>() + (n - 1) * kWindowValues, kWindowValues * sizeof(float));
  }
  const Shape& audio_decl = a.unet->info().inputs[a.roles.audio].shape;
  Shape audio_shape = {run};
  audio_shape.insert(audio_shape.end(), audio_decl.begin() + 1, audio_decl.end());
  std::vector<TensorView> inputs(2);
  inputs[a.roles.visual] = {DataType::kFloat32, {run, 6, s, s}, visual_.data()};
  inputs[a.roles.audio] = {DataType::kFloat32, audio_shape, audio_.data()};
  const MutableTensorView out{DataType::kFloat32, {run, 3, s, s}, output_.data()};
  const auto start = std::chrono::steady_clock::now();
  Status ran = a.unet->Run(inputs, {out});
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
    job.face.resize(static_cast<size_t>(s) * s * 3);
    OutputToImage(output_.data_as<float>() + k * output_size, s, job.face.data());
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
