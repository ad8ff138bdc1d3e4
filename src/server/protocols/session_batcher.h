// Live sessions' frames on the device's scheduler (runtime/scheduler.h): each group of a
// session's frames is one live job there, batched with the frames of every other caller of the
// avatar (other sessions, the monolithic and lipsyncsrv services).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/core/avatar_registry.h"
#include "server/core/metrics.h"

namespace lipsync::server {

// The mutex and condition a session thread waits on; batch workers signal it when a group is done.
struct SessionSignal {
  std::mutex mu;
  std::condition_variable cv;
};

// One output frame's model input and, once run, its output.
struct SessionFrameJob {
  int64_t index = 0;
  std::vector<uint8_t> face;  // the inner face S*S*3 BGR in; the model's face out
  std::vector<float> audio;   // the frame's audio window [32,16,16]
};

// Frames one session hands to its avatar's worker at once. `done` and `status` are guarded by the
// signal's mutex; the worker owns the jobs until `done`.
struct FrameGroup {
  std::shared_ptr<SessionSignal> signal;
  std::vector<SessionFrameJob> jobs;
  bool done = false;
  Status status;
  std::atomic<bool> cancelled{false};  // the session is gone: skip its frames
  size_t taken = 0;                    // jobs the worker has put in batches (worker only)
  size_t finished = 0;                 // jobs run (worker only)
};

// A session's way to its avatar's scheduler. Submit() queues a group as one live job; the
// group is marked done when all its frames have run. Destruction waits for the groups submitted.
class AvatarBatcher {
 public:
  AvatarBatcher(std::shared_ptr<LoadedAvatar> avatar, int max_batch);
  ~AvatarBatcher();
  AvatarBatcher(const AvatarBatcher&) = delete;
  AvatarBatcher& operator=(const AvatarBatcher&) = delete;

  void Submit(std::shared_ptr<FrameGroup> group);
  // Frames a session hands over at once.
  int max_batch() const { return max_batch_; }
  const LoadedAvatar& avatar() const { return *avatar_; }

 private:
  static void Complete(FrameGroup& group, const Status& status);

  std::shared_ptr<LoadedAvatar> avatar_;
  int max_batch_;
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;  // groups submitted and not done
};

// The batchers of the avatars that have open sessions.
class SessionBatchers {
 public:
  SessionBatchers(int max_batch, Metrics* metrics) : max_batch_(max_batch), metrics_(metrics) {}
  // Caps the live frames of a batch of `scheduler` at max_batch and counts them in the metrics.
  void Observe(runtime::Scheduler& scheduler);
  std::shared_ptr<AvatarBatcher> Acquire(const std::shared_ptr<LoadedAvatar>& avatar);
  // Avatars with open sessions now.
  int active() const;

 private:
  int max_batch_;
  Metrics* metrics_;
  mutable std::mutex mu_;
  std::map<const LoadedAvatar*, std::weak_ptr<AvatarBatcher>> batchers_;
};

}  // namespace lipsync::server
