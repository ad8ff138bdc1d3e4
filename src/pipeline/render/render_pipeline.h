// The render pipeline's shared state and its stages (render_stages.cc); render.cc sets it up,
// runs each stage on its own thread and finishes the output. The audio, frames and paste threads
// drive the three steps of one lip-sync stream (pipeline/stream), whose batches the device's
// scheduler runs; the output thread writes the video or image files.
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
#include "pipeline/stream/lipsync_stream.h"

namespace lipsync::internal {

using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// One output frame between the stream and the output stage.
struct FrameJob {
  int64_t index = 0;  // output frame
  Image frame;        // the whole frame with its new face
};

enum Stage { kAudioStage, kFramesStage, kInferStage, kPasteStage, kOutputStage, kStageCount };

struct Pipeline {
  Pipeline(const RenderOptions& options, size_t queue_frames);

  // Set up by Render() before the threads start.
  const RenderOptions& options;
  std::string audio_path;
  std::unique_ptr<AudioReader> feature_audio;  // 16 kHz, for the features
  std::unique_ptr<AudioReader> mux_audio;      // the output's sound track (video only)
  std::unique_ptr<VideoWriter> writer;         // video output, or
  std::optional<StagingFolder> frames_dir;     // image output
  std::string frames_ext;
  int64_t estimated_total = 0;
  // Audio in, pasted frames out: its three steps run on the audio, frames and paste threads.
  std::unique_ptr<stream::LipSyncStream> stream;

  BoundedQueue<FrameJob> pasted;  // paste -> output

  int64_t frames_written = 0;     // written by the output stage
  StageStats stats[kStageCount];  // the threads' own; the stream's step times are added after
  Clock::time_point started;

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
void RunPasteStage(Pipeline& p);
void RunOutputStage(Pipeline& p);

}  // namespace lipsync::internal
