// The five render stages. Each loops: take from its input queue (time counted as starved), work
// (busy), hand on (blocked). All stop when any of them fails.
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
constexpr size_t kWindowValues = 32 * 16 * 16;

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

// Avatar frames with their face crops, least recently used dropped first beyond a byte budget.
class PreparedFrames {
 public:
  struct Entry {
    Image frame;
    Image crop;
  };
  explicit PreparedFrames(size_t budget_bytes) : budget_(budget_bytes) {}

  const Entry* Find(int64_t index) {
    auto it = entries_.find(index);
    if (it == entries_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.second);  // most recent first
    return &it->second.first;
  }

  void Add(int64_t index, Entry entry) {
    const size_t bytes = entry.frame.bgr.size() + entry.crop.bgr.size();
    if (bytes > budget_) return;
    while (used_ + bytes > budget_ && !order_.empty()) {
      auto last = entries_.find(order_.back());
      used_ -= last->second.first.frame.bgr.size() + last->second.first.crop.bgr.size();
      entries_.erase(last);
      order_.pop_back();
    }
    order_.push_front(index);
    entries_.emplace(index, std::make_pair(std::move(entry), order_.begin()));
    used_ += bytes;
  }

 private:
  size_t budget_;
  size_t used_ = 0;
  std::list<int64_t> order_;
  std::unordered_map<int64_t, std::pair<Entry, std::list<int64_t>::iterator>> entries_;
};

}  // namespace

void RunAudioStage(Pipeline& p) {
  StageClock clock(p.stats[kAudioStage]);
  AudioFeatureStream stream(p.encoder, p.options.mel, p.avatar.manifest().fps,
                            p.options.window_edge);
  std::vector<float> pcm;
  int64_t index = 0;
  bool ended = false;
  while (!ended && !p.CheckCancel()) {
    pcm.clear();
    auto n = p.feature_audio->Read(kAudioChunk, pcm);
    if (!n.ok()) return p.Fail(n.status());
    p.audio_samples += static_cast<int64_t>(*n);
    ended = *n == 0;
    if (ended && p.audio_samples == 0) {
      return p.Fail(InvalidArgument("audio '" + p.audio_path + "' holds no audio samples"));
    }
    auto windows = ended ? stream.Finish() : stream.Push(pcm.data(), *n);
    if (!windows.ok()) return p.Fail(windows.status().WithContext("audio '" + p.audio_path + "'"));
    const int64_t count = windows->element_count() / static_cast<int64_t>(kWindowValues);
    const float* values = windows->data_as<float>();
    clock.Busy();
    for (int64_t i = 0; i < count; ++i, ++index) {
      AudioWindow w{
          index, std::vector<float>(values + i * kWindowValues, values + (i + 1) * kWindowValues)};
      p.stats[kAudioStage].items++;
      if (!p.windows.Push(std::move(w))) return;  // stopped
    }
    clock.Blocked();
  }
  if (p.failed()) return;
  if (index == 0) {
    const double seconds = static_cast<double>(p.audio_samples) / kAudioSampleRate;
    char text[160];
    std::snprintf(text, sizeof(text),
                  "is too short: %.3f s of sound give no video frame (at least %.4f s is needed)",
                  seconds,
                  static_cast<double>((kMelWindowFrames - 1) * kMelHop) / kAudioSampleRate);
    return p.Fail(InvalidArgument("audio '" + p.audio_path + "' " + text));
  }
  p.total = index;
  p.windows.Close();
}

void RunFramesStage(Pipeline& p) {
  StageClock clock(p.stats[kFramesStage]);
  FrameReaderOptions reader_options;
  reader_options.video_cache_frames = p.options.video_cache_frames;
  auto reader = p.avatar.OpenFrames(reader_options);
  if (!reader.ok()) return p.Fail(reader.status());
  const int inner = p.layout.inner_size;
  const size_t visual_size = static_cast<size_t>(6) * inner * inner;
  const size_t face_row = static_cast<size_t>(inner) * 3;
  PreparedFrames cache(static_cast<size_t>(std::max(0, p.options.frame_cache_mb)) << 20);
  BatchBuffer buffer;
  for (int64_t i = 0; !p.CheckCancel(); ++i) {
    const int64_t total = p.total.load();
    if (total >= 0 && i >= total) break;
    const int64_t slot = i % p.batch;
    if (slot == 0) {  // a new batch: wait for a free input buffer
      clock.Busy();
      auto free = p.free_batches.Pop();
      clock.Blocked();
      if (!free) break;  // stopped: enough frames, or a failure
      buffer = std::move(*free);
    }
    FrameJob job;
    job.index = i;
    job.avatar_frame = (*p.sequence)(i);
    job.rect = p.avatar.crop_rects()[static_cast<size_t>(job.avatar_frame)];
    if (const auto* hit = cache.Find(job.avatar_frame)) {
      job.frame = hit->frame;  // copies: paste changes both
      job.crop = hit->crop;
    } else {
      auto frame = (*reader)->Read(job.avatar_frame);
      if (!frame.ok()) {
        return p.Fail(frame.status().WithContext("avatar '" + p.avatar.dir() + "'"));
      }
      auto crop = CropFace(*frame, job.rect, p.layout);
      if (!crop.ok()) {
        return p.Fail(
            crop.status().WithContext("avatar frame " + std::to_string(job.avatar_frame)));
      }
      job.frame = *frame;
      job.crop = *crop;
      cache.Add(job.avatar_frame, {std::move(*frame), std::move(*crop)});
    }
    // The inner face is the centre of the crop.
    const size_t crop_row = static_cast<size_t>(job.crop.width) * 3;
    const uint8_t* face = job.crop.bgr.data() + p.layout.inner_offset * (crop_row + 3);
    if (p.frame_form) {
      uint8_t* to = buffer->faces.data() + slot * face_row * inner;
      for (int y = 0; y < inner; ++y) std::memcpy(to + y * face_row, face + y * crop_row, face_row);
    } else {
      FillVisualInput(face, crop_row, p.layout, buffer->visual.data() + slot * visual_size);
    }
    job.input = buffer;
    p.stats[kFramesStage].items++;
    clock.Busy();
    if (!p.cropped.Push(std::move(job))) return;  // stopped: enough frames, or a failure
    clock.Blocked();
  }
  p.cropped.Close();
}

namespace {

// One batch's run on the scheduler: its output, and the run's outcome once `done`.
struct BatchRun {
  std::shared_ptr<BatchOutput> output = std::make_shared<BatchOutput>();
  runtime::JobTimes times;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status status;
};

// Queues the batch of `n` frames (its faces in `input`, its windows in `audio`) on the scheduler,
// which pads a fixed-batch model's short batch.
Status SubmitBatch(Pipeline& p, const BatchInput& input, const Tensor& audio, int64_t n,
                   const std::shared_ptr<BatchRun>& run) {
  const int s = p.layout.inner_size;
  const Shape& declared = p.model->engine().info().inputs[p.roles.audio].shape;
  Shape audio_shape = {n};
  audio_shape.insert(audio_shape.end(), declared.begin() + 1, declared.end());
  const size_t out_values = static_cast<size_t>(n) * 3 * s * s;
  runtime::Job job;
  job.audio = {DataType::kFloat32, audio_shape, audio.data()};
  if (p.frame_form) {
    run->output->faces.reset(new uint8_t[out_values]);
    job.visual = {DataType::kUInt8, {n, s, s, 3}, input.faces.data()};
    job.output = {DataType::kUInt8, {n, s, s, 3}, run->output->faces.get()};
  } else {
    run->output->visual.reset(new float[out_values]);
    job.visual = {DataType::kFloat32, {n, 6, s, s}, input.visual.data()};
    job.output = {DataType::kFloat32, {n, 3, s, s}, run->output->visual.get()};
  }
  job.priority = runtime::Priority::kOffline;
  job.origin = runtime::Origin::kRender;
  job.cancelled = p.options.cancel;
  job.times = &run->times;
  job.done = [run](const Status& status) {
    {
      std::lock_guard<std::mutex> lock(run->mu);
      run->done = true;
      run->status = status;
    }
    run->cv.notify_all();
  };
  job.keep_alive = run;  // the views' buffers stay with the waiting inference thread
  return p.scheduler->Submit(p.model, std::move(job));
}

Status WaitForRun(BatchRun& run) {
  std::unique_lock<std::mutex> lock(run.mu);
  run.cv.wait(lock, [&] { return run.done; });
  return run.status;
}

// Takes the next batch in frame order: its audio windows into `audio`, its frames into `jobs`
// (empty at the end of the audio, or on a failure), and queues it on the scheduler. One
// inference thread at a time, so that the scheduler's queue holds batches in frame order and
// never mixes two (only the last batch can be short).
Status TakeBatch(Pipeline& p, Tensor& audio, std::vector<FrameJob>& jobs, int64_t* sequence,
                 const std::shared_ptr<BatchRun>& run) {
  std::lock_guard<std::mutex> lock(p.gather_mutex);
  jobs.clear();
  while (static_cast<int>(jobs.size()) < p.batch) {
    auto window = p.windows.Pop();
    if (!window) break;  // the audio has ended (or a failure)
    auto job = p.cropped.Pop();
    if (!job) break;  // a failure stopped the queue
    const size_t k = jobs.size();
    if (job->index != window->index) {
      return Internal("render: frame " + std::to_string(job->index) + " met audio window " +
                      std::to_string(window->index));
    }
    if (job->index % p.batch != static_cast<int64_t>(k) || (k > 0 && job->input != jobs[0].input)) {
      return Internal("render: frame " + std::to_string(job->index) +
                      " is not in its batch's input buffer");
    }
    std::memcpy(audio.data_as<float>() + k * kWindowValues, window->values.data(),
                kWindowValues * sizeof(float));
    jobs.push_back(std::move(*job));
  }
  if (jobs.empty()) return Status::Ok();
  *sequence = p.batches_taken++;
  return SubmitBatch(p, *jobs[0].input, audio, static_cast<int64_t>(jobs.size()), run);
}

// Hands a run batch on to the paste stage once every batch taken before it has been handed on.
// False when the pipeline stopped.
bool HandOn(Pipeline& p, int64_t sequence, std::vector<FrameJob>& jobs) {
  std::unique_lock<std::mutex> lock(p.handoff_mutex);
  p.handoff_turn.wait(lock, [&] { return p.batches_handed_on == sequence || p.failed(); });
  if (p.failed()) return false;
  lock.unlock();  // the push may wait for room; the next batch waits for its turn meanwhile
  for (auto& job : jobs) {
    if (!p.inferred.Push(std::move(job))) return false;
  }
  lock.lock();
  ++p.batches_handed_on;
  lock.unlock();
  p.handoff_turn.notify_all();
  return true;
}

}  // namespace

// An inference thread: its batches run on the device's scheduler (one worker each, up to
// p.runs at once). Starved: waiting for a batch's frames and windows; busy: from queueing the
// batch on the scheduler until its run is done (the wait for a worker and the run; the model's
// CPU time on the worker counts in cpu_s); blocked: waiting to hand it on in frame order.
void RunInferStage(Pipeline& p, int thread) {
  StageStats& stats = p.infer_stats[static_cast<size_t>(thread)];
  StageClock clock(stats);
  Tensor audio = Tensor::Uninitialized(DataType::kFloat32, {p.batch, 32, 16, 16});
  std::vector<FrameJob> jobs;
  while (!p.CheckCancel()) {
    int64_t sequence = 0;
    auto run = std::make_shared<BatchRun>();
    Status taken = TakeBatch(p, audio, jobs, &sequence, run);
    if (!taken.ok()) return p.Fail(taken);  // nothing was queued
    clock.Starved();
    if (jobs.empty()) break;
    const int64_t n = static_cast<int64_t>(jobs.size());
    // Always waited for: the run reads this thread's windows and the batch's input buffer.
    Status ran = WaitForRun(*run);
    stats.cpu_s += run->times.run_cpu_seconds;
    if (!ran.ok()) {
      if (p.CheckCancel()) return;  // the scheduler dropped it: the render was cancelled
      return p.Fail(ran);
    }
    if (p.failed()) break;
    ++p.batches;
    p.free_batches.Push(jobs[0].input);  // the frames stage may fill it again
    for (FrameJob& job : jobs) {
      job.input.reset();
      job.output = run->output;
    }
    stats.items += n;
    clock.Busy();
    if (!HandOn(p, sequence, jobs)) return;
    clock.Blocked();
  }
  // The last inference thread to end: every frame the audio asks for is in, and the frame
  // reader may stop.
  if (p.infer_threads_running.fetch_sub(1) == 1) {
    p.cropped.Stop();
    p.free_batches.Stop();
    p.inferred.Close();
  }
}

void RunPasteStage(Pipeline& p) {
  StageClock clock(p.stats[kPasteStage]);
  const int s = p.layout.inner_size;
  const size_t face_values = static_cast<size_t>(s) * s * 3;
  std::vector<uint8_t> face(face_values);
  while (!p.CheckCancel()) {
    auto job = p.inferred.Pop();
    clock.Starved();
    if (!job) break;
    const size_t slot = static_cast<size_t>(job->index % p.batch);
    const uint8_t* new_face = face.data();
    if (p.frame_form) {
      new_face = job->output->faces.get() + slot * face_values;
    } else {
      OutputToImage(job->output->visual.get() + slot * face_values, s, face.data());
    }
    Status pasted = PasteFace(new_face, p.layout, job->crop, job->rect, job->frame);
    if (!pasted.ok()) return p.Fail(pasted);
    job->output.reset();
    job->crop = {};
    p.stats[kPasteStage].items++;
    clock.Busy();
    if (!p.pasted.Push(std::move(*job))) return;
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
      const int64_t total = p.total.load();
      progress.total_known = total >= 0;
      progress.frames_total = total >= 0 ? total : std::max(p.estimated_total, p.frames_written);
      progress.elapsed_s = SecondsSince(p.started);
      p.options.progress(progress);
    }
  }
}

}  // namespace lipsync::internal
