// The render stages: three drive the lip-sync stream, the output stage writes. All stop when any
// of them fails.
#include <time.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <list>
#include <mutex>
#include <unordered_map>

#include "lipsync/face.h"
#include "pipeline/render/render_pipeline.h"

namespace lipsync::internal {

namespace {

constexpr size_t kAudioChunk = 8000;  // 0.5 s at 16 kHz per read
constexpr size_t kMuxChunk = 4800;    // 0.1 s at 48 kHz

double ThreadCpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Times the three states of a stage, and its thread's CPU time when it ends. (Busy time is wall
// time: it includes time the thread was ready but another one had the core.)
class StageClock {
 public:
  explicit StageClock(StageStats& stats)
      : stats_(stats), t_(Clock::now()), cpu_(ThreadCpuSeconds()) {}
  ~StageClock() { stats_.cpu_s += ThreadCpuSeconds() - cpu_; }
  void Starved() { stats_.starved_s += Lap(); }
  void Busy() { stats_.busy_s += Lap(); }
  void Blocked() { stats_.blocked_s += Lap(); }
  void Skip() { Lap(); }  // time the stream counts in its own step times

 private:
  double Lap() {
    const auto now = Clock::now();
    const double s = std::chrono::duration<double>(now - t_).count();
    t_ = now;
    return s;
  }
  StageStats& stats_;
  Clock::time_point t_;
  double cpu_;
};

}  // namespace

// Reads the speech file in chunks into the stream. Busy: reading (the stream counts its
// features' time on its own).
void RunAudioStage(Pipeline& p) {
  StageClock clock(p.stats[kAudioStage]);
  std::vector<float> pcm;
  int64_t samples = 0;
  for (;;) {
    if (p.CheckCancel()) return;
    pcm.clear();
    auto n = p.feature_audio->Read(kAudioChunk, pcm);
    if (!n.ok()) return p.Fail(n.status());
    samples += static_cast<int64_t>(*n);
    clock.Busy();
    if (*n == 0) break;
    Status pushed = p.stream->Push(pcm.data(), *n);
    clock.Skip();
    if (!pushed.ok()) return p.Fail(pushed.WithContext("audio '" + p.audio_path + "'"));
  }
  if (samples == 0) {
    return p.Fail(InvalidArgument("audio '" + p.audio_path + "' holds no audio samples"));
  }
  Status finished = p.stream->Finish();
  if (!finished.ok()) return p.Fail(finished.WithContext("audio '" + p.audio_path + "'"));
  if (p.stream->frames_total() == 0) {
    const double seconds = static_cast<double>(samples) / kAudioSampleRate;
    char text[160];
    std::snprintf(text, sizeof(text),
                  "is too short: %.3f s of sound give no video frame (at least %.4f s is needed)",
                  seconds,
                  static_cast<double>((kMelWindowFrames - 1) * kMelHop) / kAudioSampleRate);
    return p.Fail(InvalidArgument("audio '" + p.audio_path + "' " + text));
  }
}

// Cuts each window's avatar frame and face into its batch, which goes to the scheduler full.
void RunFramesStage(Pipeline& p) {
  StageClock clock(p.stats[kFramesStage]);
  while (!p.CheckCancel()) {
    auto prepared = p.stream->Prepare(/*wait=*/true);
    if (!prepared.ok()) return p.Fail(prepared.status());
    if (!*prepared) break;
  }
  clock.Skip();
}

// Takes the frames in order as their batches have run, with the new faces pasted in.
void RunPasteStage(Pipeline& p) {
  StageClock clock(p.stats[kPasteStage]);
  while (!p.CheckCancel()) {
    auto frame = p.stream->Next();
    if (!frame.ok()) return p.Fail(frame.status());
    clock.Skip();
    if (!*frame) break;
    if (!p.pasted.Push({(*frame)->index, std::move((*frame)->frame)})) return;
    clock.Blocked();
  }
  p.pasted.Close();
}

namespace {

// Feeds the writer the input audio up to the end of `frames` frames.
Status FeedMuxAudio(Pipeline& p, int64_t frames, bool* audio_ended) {
  std::vector<float> pcm;
  const int64_t target = p.writer->AudioSamplesFor(frames);
  while (!*audio_ended && p.writer->audio_samples_written() < target) {
    pcm.clear();
    LIPSYNC_ASSIGN_OR_RETURN(size_t n, p.mux_audio->Read(kMuxChunk, pcm));
    if (n == 0) {
      *audio_ended = true;
      break;
    }
    LIPSYNC_RETURN_IF_ERROR(p.writer->WriteAudio(pcm.data(), n));
  }
  return Status::Ok();
}

}  // namespace

void RunOutputStage(Pipeline& p) {
  StageClock clock(p.stats[kOutputStage]);
  bool audio_ended = false;
  while (!p.CheckCancel()) {
    auto job = p.pasted.Pop();
    clock.Starved();
    if (!job) break;
    if (job->index != p.frames_written) {
      return p.Fail(Internal("render: frame " + std::to_string(job->index) + " arrived as frame " +
                             std::to_string(p.frames_written)));
    }
    Status written;
    if (p.writer) {
      written = FeedMuxAudio(p, job->index + 1, &audio_ended);
      if (written.ok()) written = p.writer->WriteFrame(job->frame);
    } else {
      char name[32];
      std::snprintf(name, sizeof(name), "/%06lld.", static_cast<long long>(job->index));
      written = SaveImage(p.frames_dir->path() + name + p.frames_ext, job->frame);
    }
    if (!written.ok()) return p.Fail(written);
    ++p.frames_written;
    p.stats[kOutputStage].items++;
    clock.Busy();
    if (p.options.progress) {
      RenderProgress progress;
      progress.frames_done = p.frames_written;
      const int64_t total = p.stream->frames_total();  // -1 until the audio has ended
      progress.total_known = total >= 0;
      progress.frames_total = total >= 0 ? total : std::max(p.estimated_total, p.frames_written);
      progress.elapsed_s = SecondsSince(p.started);
      p.options.progress(progress);
    }
  }
}

}  // namespace lipsync::internal
