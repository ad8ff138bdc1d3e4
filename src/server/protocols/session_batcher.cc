#include "server/protocols/session_batcher.h"

#include <cstring>

#include "server/core/avatar_faces.h"

namespace lipsync::server {
namespace {

constexpr int64_t kWindowValues = 32 * 16 * 16;

// A group's frames packed as one job's buffers.
struct Packed {
  std::shared_ptr<FrameGroup> group;
  Tensor faces, audio, output;
};

}  // namespace

AvatarBatcher::AvatarBatcher(std::shared_ptr<LoadedAvatar> avatar, int max_batch)
    : avatar_(std::move(avatar)), max_batch_(std::max(1, max_batch)) {}

AvatarBatcher::~AvatarBatcher() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return pending_ == 0; });
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

void AvatarBatcher::Submit(std::shared_ptr<FrameGroup> group) {
  LoadedAvatar& a = *avatar_;
  const int64_t n = static_cast<int64_t>(group->jobs.size());
  if (n == 0) return Complete(*group, Status::Ok());
  const int64_t s = a.layout.inner_size;
  const size_t face_bytes = static_cast<size_t>(s * s * 3);
  auto packed = std::make_shared<Packed>();
  packed->group = group;
  packed->faces = Tensor::Uninitialized(DataType::kUInt8, {n, s, s, 3});
  packed->audio = Tensor::Uninitialized(DataType::kFloat32, {n, 32, 16, 16});
  packed->output = Tensor::Uninitialized(DataType::kUInt8, {n, s, s, 3});
  for (int64_t k = 0; k < n; ++k) {
    const SessionFrameJob& job = group->jobs[static_cast<size_t>(k)];
    std::memcpy(packed->faces.data_as<uint8_t>() + k * face_bytes, job.face.data(), face_bytes);
    std::memcpy(packed->audio.data_as<float>() + k * kWindowValues, job.audio.data(),
                kWindowValues * sizeof(float));
  }
  runtime::Job job;
  job.visual = packed->faces.view();
  job.audio = packed->audio.view();
  job.output = packed->output.mutable_view();
  job.priority = runtime::Priority::kLive;
  job.origin = runtime::Origin::kSession;
  job.cancelled = &group->cancelled;
  job.caller = group->signal.get();
  job.keep_alive = avatar_;
  job.done = [this, packed, face_bytes](const Status& status) {
    FrameGroup& g = *packed->group;
    if (status.ok()) {
      const uint8_t* out = packed->output.data_as<uint8_t>();
      for (size_t k = 0; k < g.jobs.size(); ++k) {
        g.jobs[k].face.assign(out + k * face_bytes, out + (k + 1) * face_bytes);
      }
      g.finished = g.jobs.size();
    }
    Complete(g, status.ok() ? status : status.WithContext("avatar '" + avatar_->id + "' model"));
    std::lock_guard lock(mu_);
    --pending_;
    cv_.notify_all();
  };
  {
    std::lock_guard lock(mu_);
    ++pending_;
  }
  const Status queued = a.scheduler->Submit(a.scheduled, std::move(job));
  if (!queued.ok()) {
    Complete(*group, queued);
    std::lock_guard lock(mu_);
    --pending_;
  }
}

void SessionBatchers::Observe(runtime::Scheduler& scheduler) {
  scheduler.SetLiveMaxBatch(max_batch_);
  Metrics* metrics = metrics_;
  scheduler.SetBatchListener([metrics](const runtime::BatchRecord& r) {
    const int frames = r.by_origin[static_cast<size_t>(runtime::Origin::kSession)];
    if (frames == 0 || !metrics) return;
    // Frames and time are the scheduler's own metrics; these say how sessions shared batches.
    metrics->RecordSessionBatch(frames, r.callers);
  });
}

std::shared_ptr<AvatarBatcher> SessionBatchers::Acquire(
    const std::shared_ptr<LoadedAvatar>& avatar) {
  std::lock_guard lock(mu_);
  for (auto it = batchers_.begin(); it != batchers_.end();) {
    it = it->second.expired() ? batchers_.erase(it) : std::next(it);
  }
  if (auto found = batchers_[avatar.get()].lock()) return found;
  auto batcher = std::make_shared<AvatarBatcher>(avatar, max_batch_);
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
