// One lip-sync stream: 16 kHz mono PCM in, in chunks of any size; the avatar's frames with the
// mouth that matches it out, in order, with their timestamps. `lipsync render` (a file in, a video
// out), the server's live sessions (the network in, JPEG out) and the monolithic service (a chunk
// in, its frames out) all run on it, so that all give the same frames for the same inputs.
//
// Three steps (render gives each its own thread, a session makes all three on its one):
//   Push/Finish  the audio becomes one window per video frame as soon as the audio that decides it
//                has arrived (AudioFeatureStream). A caller that makes the model's inputs itself
//                pushes them instead (PushInputs);
//   Prepare      each waiting window gets its avatar frame (the walk's next) and face crop, and
//                batches of them go to the device's scheduler as one job each;
//   Next         the next frame once its batch has run, with its new face pasted in.
// Push and Prepare are each called by one thread at a time; Next may be called by several at once
// (each then gets a different frame, and they may finish out of order: a frame carries its index).
// Memory is bounded: at most `max_batches` batches are open (filling, queued, run and not yet
// pulled), and Push waits while `max_waiting_windows` windows wait. The batches' buffers come
// from the host working-memory pool (lipsync/memory.h), so that a host budget counts them; past
// its limit the stream fails with kResourceExhausted. Any failure stops the stream;
// every call then returns it. Destruction drops the batches still queued and waits for those
// running.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "lipsync/audio.h"
#include "lipsync/frames.h"
#include "lipsync/render.h"  // StageStats
#include "pipeline/stream/frame_source.h"
#include "runtime/scheduler.h"

namespace lipsync::stream {

struct StreamFrame {
  int64_t index = 0;  // output frame, from 0
  double pts_s = 0;   // index / fps
  int64_t avatar_frame = 0;
  Image frame;  // the avatar frame with the new face
};

struct StreamOptions {
  double fps = 25.0;  // the avatar's
  MelOptions mel;
  WindowEdge window_edge = WindowEdge::kZeros;
  int batch = 8;  // frames per job (a fixed-batch model's own: the scheduler pads short ones)
  // Live: Prepare hands over what waits at once (short batches) as live work. Offline: only full
  // batches, until the audio has ended.
  bool live = false;
  runtime::Origin origin = runtime::Origin::kTest;
  // A batch not yet run when this passes fails with kDeadlineExceeded (a caller's deadline).
  runtime::SchedulerClock::time_point deadline = runtime::SchedulerClock::time_point::max();
  // Faces go to the model as uint8 BGR (the frame form), else as its float32 input [n,6,S,S].
  bool frame_form = true;
  // The visual inputs given to PushInputs go to the model where they are instead of being copied
  // into each batch (the float input only): the caller gives them in one PushInputs and keeps them
  // until its every frame is taken.
  bool visual_in_place = false;
  int max_batches = 2;
  size_t max_waiting_windows = 0;  // 0: Push never waits
  // Runs on a scheduler thread, without the stream's lock, each time a batch has run (or failed):
  // for a caller that waits on a condition of its own.
  std::function<void()> on_batch_done;
  // Puts the new face (S x S BGR bytes) into the frame; unset: PasteFace with the stream's layout
  // (into the centre of the crop, as the model was trained).
  std::function<Status(const uint8_t* face, const SourceFrame& source, Image& frame)> paste;
};

// Where the time of each step went (summed over calls; cpu_s is left to the caller's threads).
struct StreamStats {
  StageStats audio{"audio"}, frames{"frames"}, infer{"infer"}, paste{"paste"};
  int64_t batches = 0;
  double infer_cpu_s = 0;  // the scheduler threads' CPU time in this stream's runs
};

class LipSyncStream {
 public:
  // The UNet `model` on `scheduler` (both outlive the stream), the audio encoder, the avatar's
  // frames and walk, and the face layout of the model's input.
  LipSyncStream(runtime::Scheduler& scheduler, std::shared_ptr<runtime::ScheduledModel> model,
                AudioEncoder& encoder, FrameSource& frames, const FrameSequence& sequence,
                const FaceLayout& layout, StreamOptions options);
  ~LipSyncStream();
  LipSyncStream(const LipSyncStream&) = delete;
  LipSyncStream& operator=(const LipSyncStream&) = delete;

  // Audio in. Finish() says the audio has ended; frames_total() is then known. Audio too short
  // for the encoder's first window (about 0.19 s) fails Finish with kInvalidArgument.
  Status Push(const float* pcm, size_t count);
  Status Finish();
  // The model's inputs as the caller made them, in place of Push's audio: `windows` [n,32,16,16],
  // one per output frame, and when `visual` is set each frame's visual input too (n float32
  // [6,S,S] blocks, any alignment; for a stream that takes the float input, not the frame form).
  // `visual` is read by Prepare: the caller keeps it until those frames are prepared (with
  // `visual_in_place`, until they are taken, and float-aligned).
  Status PushInputs(const Tensor& windows, const void* visual = nullptr);

  // Prepares one waiting window's frame and submits its batch when it is complete. With `wait`,
  // waits for a window and for room; false once every frame is prepared. Without, false when no
  // window waits or no batch has room (a live stream then submits its short batch).
  Result<bool> Prepare(bool wait);
  // Prepares every waiting window there is room for (a live stream's step).
  Status PrepareWaiting();

  // The next frame not yet taken: waits for its batch to run; nullopt after the last.
  Result<std::optional<StreamFrame>> Next();
  // Whether Next() would return at once (a frame, the end, or the failure).
  bool FrameReady() const;
  // Windows not yet prepared, and batches open (filling, queued, running or not yet pulled).
  size_t windows_waiting() const;
  int batches_open() const;
  bool audio_ended() const;
  int64_t frames_total() const;  // -1 until Finish()
  int64_t audio_samples() const;

  // Stops the stream with `status` (the first one wins): every waiting call returns it.
  void Stop(const Status& status);
  StreamStats stats() const;

 private:
  struct Batch;
  struct Window {
    std::vector<float> values;     // [32,16,16]
    const void* visual = nullptr;  // the caller's visual input, or null: from the crop
  };
  using Lock = std::unique_lock<std::mutex>;
  // Waits on cv_ until `ready` or a stop.
  template <typename Pred>
  Status WaitLocked(Lock& lock, Pred ready);
  Status StoppedLocked() const;
  // The first batch with frames not yet taken, or null.
  std::shared_ptr<Batch> NextBatchLocked() const;
  // That batch has run (or failed), or the last frame is taken.
  bool NextReadyLocked() const;
  // Queues the filling batch on the scheduler (called without the lock; `batch` left the filling
  // slot under it).
  void Submit(const std::shared_ptr<Batch>& batch);
  void BatchDone(Batch& batch, const Status& status);
  // A batch with its buffers from the host pool (ResourceExhausted past its limit).
  Result<std::shared_ptr<Batch>> NewBatch();
  // Queues the windows [n,32,16,16] for Prepare; the audio step was busy since `since`.
  void AddWindowsLocked(const Tensor& windows, const void* visual,
                        std::chrono::steady_clock::time_point since);

  runtime::Scheduler& scheduler_;
  std::shared_ptr<runtime::ScheduledModel> model_;
  FrameSource& frames_;
  FrameSequence sequence_;
  FaceLayout layout_;
  StreamOptions options_;
  Shape audio_item_shape_;  // the model's audio input without its batch
  AudioFeatureStream features_;
  std::atomic<bool> dropped_{false};  // the scheduler drops this stream's queued frames

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Status error_;
  bool stopped_ = false;
  bool audio_ended_ = false;
  bool inputs_given_ = false;  // PushInputs, not Push
  int64_t audio_samples_ = 0;
  int64_t windows_made_ = 0;
  std::deque<Window> windows_;  // made and not yet prepared, in frame order
  int64_t next_frame_ = 0;      // the next window's output index
  int64_t expected_ = 0;        // Prepare's: the first output index not yet announced to frames_
  std::deque<std::shared_ptr<Batch>> open_;  // in frame order; the filling one last; a batch
                                             // leaves once its every frame is pasted
  std::shared_ptr<Batch> filling_;
  std::vector<std::shared_ptr<Batch>> spare_;  // run and pulled, for reuse
  int in_scheduler_ = 0;                       // batches whose done has not finished
  StreamStats stats_;
};

}  // namespace lipsync::stream
