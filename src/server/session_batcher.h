// Batching for live sessions: one worker thread per loaded avatar runs the frames of all sessions
// on that avatar through its UNet together, up to a batch limit; workers of different avatars take
// turns on the model in arrival order (FairGate), so one busy avatar cannot starve another.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/avatar_registry.h"
#include "server/metrics.h"

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

// A ticket gate: workers pass in the order they asked, which is round robin among busy avatars,
// and up to `capacity` of them are inside at once (1 on the CPU, where runs share the cores; more
// on a backend whose runs overlap).
class FairGate {
 public:
  void Enter();
  void Leave();
  // Lets up to `capacity` callers in at once from now on (never fewer than before).
  void Widen(int capacity);
  // Callers inside Enter() that have not passed yet (lets a test that holds the gate know that a
  // worker has taken its batch and waits to run it).
  uint64_t waiting() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ = 0, left_ = 0, capacity_ = 1;
};

// The worker of one avatar. Submit() queues a group; the worker takes what waits, up to max_batch
// frames from any groups, runs them as one batch and marks each group done when all its frames
// have run. Destruction stops the worker; groups still queued are marked done as cancelled.
class AvatarBatcher {
 public:
  AvatarBatcher(std::shared_ptr<LoadedAvatar> avatar, int max_batch, FairGate* gate,
                Metrics* metrics);
  ~AvatarBatcher();
  AvatarBatcher(const AvatarBatcher&) = delete;
  AvatarBatcher& operator=(const AvatarBatcher&) = delete;

  void Submit(std::shared_ptr<FrameGroup> group);
  int max_batch() const { return max_batch_; }
  const LoadedAvatar& avatar() const { return *avatar_; }

 private:
  struct Slot {
    FrameGroup* group;
    size_t job;
  };
  void Loop();
  Status RunBatch(const std::vector<Slot>& slots);
  static void Complete(FrameGroup& group, const Status& status);

  std::shared_ptr<LoadedAvatar> avatar_;
  int max_batch_;
  FairGate* gate_;
  Metrics* metrics_;
  Tensor faces_, audio_, output_;  // one batch: uint8 faces in, float windows, uint8 faces out
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<FrameGroup>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// The workers of the avatars that have open sessions: a worker starts with the first session on
// an avatar and stops when the last one lets go of it.
class SessionBatchers {
 public:
  SessionBatchers(int max_batch, Metrics* metrics) : max_batch_(max_batch), metrics_(metrics) {}
  std::shared_ptr<AvatarBatcher> Acquire(const std::shared_ptr<LoadedAvatar>& avatar);
  // Workers running now.
  int active() const;

 private:
  int max_batch_;
  Metrics* metrics_;
  FairGate gate_;
  mutable std::mutex mu_;
  std::map<const LoadedAvatar*, std::weak_ptr<AvatarBatcher>> batchers_;
};

}  // namespace lipsync::server
