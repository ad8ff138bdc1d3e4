// The render pipeline's shared state and its five stages (render_stages.cc); render.cc sets it
// up, runs each stage on its own thread and finishes the output.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "lipsync/render.h"
#include "pipeline/avatar/avatar_internal.h"
#include "pipeline/render/bounded_queue.h"
#include "runtime/scheduler.h"

namespace lipsync::internal {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The audio window of one output frame, [32,16,16].
struct AudioWindow {
  int64_t index = 0;
  std::vector<float> values;
};

// The model's face input for one batch: float32 [batch,6,S,S] for Engine::Run, or with the
// frame form BGR uint8 inner faces [batch,S,S,3] for Engine::RunFrames (the backend masks and
// converts them, on its GPU). The frames stage writes frame i straight into slot i % batch, so
// that the model runs on it without a copy (the scheduler copies only to pad a fixed-batch model's
// short batch); buffers go back to a pool after the run.
struct BatchInput {
  std::vector<float> visual;
  std::vector<uint8_t> faces;
};
using BatchBuffer = std::shared_ptr<BatchInput>;

// One batch's model output, shared by its frames: float32 [n,3,S,S], or with the frame form the
// BGR uint8 faces [n,S,S,3]. (Left uninitialised: the model writes all of it.)
struct BatchOutput {
  std::unique_ptr<float[]> visual;
  std::unique_ptr<uint8_t[]> faces;
};

// One output frame on its way through the stages.
struct FrameJob {
  int64_t index = 0;         // output frame
  int64_t avatar_frame = 0;  // which avatar frame it is made from
  Image frame;               // the whole frame; the new face is pasted into it
  Image crop;                // the face crop at layout.crop_size
  CropRect rect;
  BatchBuffer input;                          // holds the frame's input at slot index % batch
  std::shared_ptr<const BatchOutput> output;  // holds the frame's new face at slot index % batch
};

enum Stage { kAudioStage, kFramesStage, kInferStage, kPasteStage, kOutputStage, kStageCount };

struct Pipeline {
  Pipeline(const Avatar& avatar, int runs, AudioEncoder& encoder, const RenderOptions& options,
           size_t queue_frames);

  // Set up by Render() before the threads start.
  const Avatar& avatar;
  int runs = 1;  // batches in flight on the scheduler at once, one per inference thread
  // The device's scheduler, which runs every batch, and the UNet on it for this render.
  runtime::Scheduler* scheduler = nullptr;
  std::shared_ptr<runtime::ScheduledModel> model;
  AudioEncoder& encoder;
  const RenderOptions& options;
  FaceLayout layout;
  UnetInputs roles;
  std::optional<FrameSequence> sequence;
  int batch = 1;            // frames per model run (a fixed-batch model's own; the scheduler pads)
  bool frame_form = false;  // faces go to the model as uint8 (Engine::RunFrames)
  std::string audio_path;
  std::unique_ptr<AudioReader> feature_audio;  // 16 kHz, for the features
  std::unique_ptr<AudioReader> mux_audio;      // the output's sound track (video only)
  std::unique_ptr<VideoWriter> writer;         // video output, or
  std::optional<StagingFolder> frames_dir;     // image output
  std::string frames_ext;
  int64_t estimated_total = 0;

  BoundedQueue<AudioWindow> windows;
  BoundedQueue<BatchBuffer> free_batches;  // input buffers the frames stage may fill
  BoundedQueue<FrameJob> cropped;          // frames -> infer
  BoundedQueue<FrameJob> inferred;         // infer -> paste
  BoundedQueue<FrameJob> pasted;           // paste -> output

  // The number of output frames, known when the audio has ended (-1 before).
  std::atomic<int64_t> total{-1};
  int64_t audio_samples = 0;        // written by the audio stage
  std::atomic<int64_t> batches{0};  // counted by the inference threads
  int64_t frames_written = 0;       // written by the output stage
  StageStats stats[kStageCount];    // the inference stage's: its threads' summed after they end
  Clock::time_point started;

  // The inference threads (one per run) take batches in frame order and queue them on the
  // scheduler in that order, one thread at a time, wait for their runs (which overlap) and hand
  // them on in the order they were taken.
  std::vector<StageStats> infer_stats;  // one per inference thread
  std::mutex gather_mutex;
  int64_t batches_taken = 0;  // under gather_mutex
  std::mutex handoff_mutex;
  std::condition_variable handoff_turn;
  int64_t batches_handed_on = 0;  // under handoff_mutex
  std::atomic<int> infer_threads_running{0};

  // The first failure stops every queue; later ones are dropped.
  void Fail(const Status& status);
  bool failed() const { return failed_.load(); }
  Status error() const;
  // Fails with kCancelled when the caller's cancel flag is set; true then.
  bool CheckCancel();

 private:
  mutable std::mutex error_mutex_;
  Status error_;
  std::atomic<bool> failed_{false};
};

void RunAudioStage(Pipeline& p);
void RunFramesStage(Pipeline& p);
void RunInferStage(Pipeline& p, int thread);  // thread: which of p.infer_stats it keeps
void RunPasteStage(Pipeline& p);
void RunOutputStage(Pipeline& p);

}  // namespace lipsync::internal
