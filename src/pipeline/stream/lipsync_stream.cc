#include "pipeline/stream/lipsync_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "lipsync/face.h"
#include "lipsync/memory.h"

namespace lipsync::stream {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

// A batch's frames, its model input and output. Filled by Prepare, read and written by the
// scheduler between Submit and BatchDone, read by Next; reused once pulled.
struct LipSyncStream::Batch {
  int64_t first = 0;  // output index of its first frame
  int count = 0;      // frames prepared into it
  std::vector<SourceFrame> frames;
  std::vector<int64_t> avatar_frames;
  // From the host working-memory pool, so that a host budget counts them: the frame form's inner
  // faces [batch,S,S,3] in and out as bytes, else the model's float input [batch,6,S,S] and
  // output [batch,3,S,S]; the windows [batch,32,16,16]. No input with `visual_in_place`: the
  // caller's, from `given` on.
  std::unique_ptr<PoolBlock> input, output, audio;
  const float* given = nullptr;
  bool done = false;  // under the stream's lock from here on
  Status status;
  runtime::JobTimes times;
  Clock::time_point queued_at;
  int taken = 0;   // frames Next has taken
  int pasted = 0;  // and finished with
};

LipSyncStream::LipSyncStream(runtime::Scheduler& scheduler,
                             std::shared_ptr<runtime::ScheduledModel> model, AudioEncoder& encoder,
                             FrameSource& frames, const FrameSequence& sequence,
                             const FaceLayout& layout, StreamOptions options)
    : scheduler_(scheduler),
      model_(std::move(model)),
      frames_(frames),
      sequence_(sequence),
      layout_(layout),
      options_(std::move(options)),
      features_(encoder, options_.mel, options_.fps, options_.window_edge) {
  options_.batch = std::max(1, options_.batch);
  options_.max_batches = std::max(1, options_.max_batches);
  options_.visual_in_place = options_.visual_in_place && !options_.frame_form;  // float input only
  const Shape& declared =
      model_->engine().info().inputs[static_cast<size_t>(model_->config().audio_input)].shape;
  audio_item_shape_.assign(declared.begin() + 1, declared.end());
}

LipSyncStream::~LipSyncStream() {
  dropped_ = true;  // queued frames are dropped; a running batch finishes
  Lock lock(mu_);
  stopped_ = true;
  cv_.wait(lock, [&] { return in_scheduler_ == 0; });
}

Status LipSyncStream::StoppedLocked() const {
  return error_.ok() ? Status(StatusCode::kCancelled, "the stream was stopped") : error_;
}

void LipSyncStream::Stop(const Status& status) {
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      stopped_ = true;
      error_ = status;
    }
  }
  dropped_ = true;
  cv_.notify_all();
}

template <typename Pred>
Status LipSyncStream::WaitLocked(Lock& lock, Pred ready) {
  cv_.wait(lock, [&] { return stopped_ || ready(); });
  return stopped_ ? StoppedLocked() : Status::Ok();
}

Status LipSyncStream::Push(const float* pcm, size_t count) {
  Lock lock(mu_);
  const auto start = Clock::now();
  if (options_.max_waiting_windows > 0) {
    LIPSYNC_RETURN_IF_ERROR(
        WaitLocked(lock, [&] { return windows_.size() < options_.max_waiting_windows; }));
  }
  if (stopped_) return StoppedLocked();
  if (audio_ended_) return FailedPrecondition("audio pushed after its end");
  if (inputs_given_) return FailedPrecondition("audio pushed to a stream given its inputs");
  if (options_.visual_in_place) {
    return FailedPrecondition("audio pushed to a stream that reads its inputs in place");
  }
  const auto room = Clock::now();
  stats_.audio.blocked_s += Seconds(start, room);
  lock.unlock();
  // The encoder runs without the lock: only this call changes the features.
  auto windows = count > 0 ? features_.Push(pcm, count) : Result<Tensor>(Tensor());
  lock.lock();
  if (!windows.ok()) {
    lock.unlock();
    const Status failed = windows.status().WithContext("audio");
    Stop(failed);
    return failed;
  }
  audio_samples_ += static_cast<int64_t>(count);
  AddWindowsLocked(*windows, nullptr, room);
  lock.unlock();
  cv_.notify_all();
  return Status::Ok();
}

void LipSyncStream::AddWindowsLocked(const Tensor& windows, const void* visual,
                                     std::chrono::steady_clock::time_point since) {
  const int64_t n = windows.element_count() / kAudioWindowValues;
  const float* values = n > 0 ? windows.data_as<float>() : nullptr;
  const size_t visual_bytes =
      static_cast<size_t>(6) * layout_.inner_size * layout_.inner_size * sizeof(float);
  for (int64_t i = 0; i < n; ++i) {
    Window& w = windows_.emplace_back();
    w.values.assign(values + i * kAudioWindowValues, values + (i + 1) * kAudioWindowValues);
    if (visual) {
      w.visual = static_cast<const uint8_t*>(visual) + static_cast<size_t>(i) * visual_bytes;
    }
  }
  windows_made_ += n;
  stats_.audio.items += n;
  stats_.audio.busy_s += Seconds(since, Clock::now());
}

Status LipSyncStream::PushInputs(const Tensor& windows, const void* visual) {
  const auto start = Clock::now();
  if (windows.dtype() != DataType::kFloat32 || windows.shape().size() != 4 ||
      windows.element_count() % kAudioWindowValues != 0 ||
      windows.shape()[1] * windows.shape()[2] * windows.shape()[3] != kAudioWindowValues) {
    return InvalidArgument("the stream's windows must be float32 [n,32,16,16], not " +
                           ShapeToString(windows.shape()));
  }
  if (visual && options_.frame_form) {
    return InvalidArgument("a stream that takes the frame form cannot be given visual inputs");
  }
  if (options_.visual_in_place &&
      (!visual || reinterpret_cast<uintptr_t>(visual) % alignof(float) != 0)) {
    return InvalidArgument(
        "a stream that reads its visual inputs in place needs them float-aligned");
  }
  {
    std::lock_guard lock(mu_);
    if (stopped_) return StoppedLocked();
    if (audio_ended_) return FailedPrecondition("inputs pushed after the end");
    if (audio_samples_ > 0) return FailedPrecondition("inputs pushed to a stream given audio");
    // Its batches read one block of the caller's from `given` on.
    if (inputs_given_ && options_.visual_in_place) {
      return FailedPrecondition("a stream that reads its visual inputs in place takes them once");
    }
    inputs_given_ = true;
    AddWindowsLocked(windows, visual, start);
  }
  cv_.notify_all();
  return Status::Ok();
}

Status LipSyncStream::Finish() {
  {
    Lock lock(mu_);
    if (stopped_) return StoppedLocked();
    if (audio_ended_) return Status::Ok();
    if (inputs_given_) {  // no audio to flush
      audio_ended_ = true;
      lock.unlock();
      cv_.notify_all();
      return Status::Ok();
    }
  }
  const auto start = Clock::now();
  auto windows = features_.Finish();
  if (!windows.ok()) {
    const Status failed = windows.status().WithContext("audio");
    Stop(failed);
    return failed;
  }
  {
    std::lock_guard lock(mu_);
    AddWindowsLocked(*windows, nullptr, start);
    audio_ended_ = true;
  }
  cv_.notify_all();
  return Status::Ok();
}

Result<std::shared_ptr<LipSyncStream::Batch>> LipSyncStream::NewBatch() {
  const size_t b = static_cast<size_t>(options_.batch);
  const size_t pixels = static_cast<size_t>(layout_.inner_size) * layout_.inner_size;
  const size_t value = options_.frame_form ? 1 : sizeof(float);
  const size_t bytes[3] = {b * pixels * (options_.frame_form ? 3 : 6) * value,
                           b * pixels * 3 * value,
                           b * static_cast<size_t>(kAudioWindowValues) * sizeof(float)};
  auto batch = std::make_shared<Batch>();
  batch->frames.resize(b);
  batch->avatar_frames.resize(b);
  std::unique_ptr<PoolBlock>* blocks[3] = {&batch->input, &batch->output, &batch->audio};
  for (int i = options_.visual_in_place ? 1 : 0; i < 3; ++i) {
    *blocks[i] = scheduler_.AllocateWorking(bytes[i]);
    if (!*blocks[i]) {
      return ResourceExhausted("no memory for a batch of " + std::to_string(b) +
                               " frames within the host memory limit");
    }
  }
  return batch;
}

Result<bool> LipSyncStream::Prepare(bool wait) {
  Lock lock(mu_);
  const auto start = Clock::now();
  const auto room = [&] {
    return filling_ != nullptr || static_cast<int>(open_.size()) < options_.max_batches;
  };
  // Hands the filling batch to the scheduler (a short one: at the end, or a live one).
  const auto submit_filling = [&] {
    auto batch = std::move(filling_);
    filling_.reset();
    lock.unlock();
    Submit(batch);
  };
  if (wait) {
    Status ready = WaitLocked(lock, [&] { return audio_ended_ || !windows_.empty(); });
    stats_.frames.starved_s += Seconds(start, Clock::now());
    LIPSYNC_RETURN_IF_ERROR(ready);
    const auto blocked = Clock::now();
    ready = WaitLocked(lock, [&] { return windows_.empty() || room(); });
    stats_.frames.blocked_s += Seconds(blocked, Clock::now());
    LIPSYNC_RETURN_IF_ERROR(ready);
  } else if (stopped_) {
    return StoppedLocked();
  }
  if (windows_.empty() || !room()) {
    if (filling_ && (audio_ended_ || options_.live) && windows_.empty()) submit_filling();
    return false;
  }
  if (!filling_ && spare_.empty()) {  // a new batch, allocated without the lock
    lock.unlock();
    auto made = NewBatch();
    if (!made.ok()) {
      Stop(made.status());
      return made.status();
    }
    lock.lock();
    spare_.push_back(std::move(*made));
    if (stopped_) return StoppedLocked();  // only Push adds windows and only Next adds room
  }
  const auto work = Clock::now();
  Window window = std::move(windows_.front());
  windows_.pop_front();
  const int64_t index = next_frame_++;
  if (!filling_) {
    filling_ = std::move(spare_.back());
    spare_.pop_back();
    filling_->first = index;
    filling_->count = 0;
    filling_->taken = 0;
    filling_->pasted = 0;
    filling_->done = false;
    filling_->status = Status::Ok();
    filling_->times = {};
    filling_->given = nullptr;
    open_.push_back(filling_);
  }
  std::shared_ptr<Batch> batch = filling_;
  lock.unlock();
  cv_.notify_all();  // room for Push's windows

  // The frame, its crop and the model's face input, without the lock: only this call fills.
  const size_t k = static_cast<size_t>(batch->count);
  const int64_t avatar_frame = sequence_(index);
  // The frames the next windows will take, so that the source may decode them meanwhile.
  expected_ = std::max(expected_, index + 1);
  for (const int64_t ahead = index + frames_.read_ahead(); expected_ <= ahead; ++expected_) {
    frames_.Expect(sequence_(expected_));
  }
  auto source = frames_.Read(avatar_frame);
  if (!source.ok()) {
    Stop(source.status());
    return source.status();
  }
  if (source->crop.bgr.empty() && !window.visual) {
    const Status no_crop = FailedPrecondition("the frame source gave avatar frame " +
                                              std::to_string(avatar_frame) + " without its crop");
    Stop(no_crop);
    return no_crop;
  }
  const int s = layout_.inner_size;
  const size_t visual_values = static_cast<size_t>(6) * s * s;
  // The crop's inner face (only read where there is a crop).
  const size_t crop_row = static_cast<size_t>(source->crop.width) * 3;
  const uint8_t* face = source->crop.bgr.empty()
                            ? nullptr
                            : source->crop.bgr.data() + layout_.inner_offset * (crop_row + 3);
  if (options_.frame_form) {
    const size_t face_row = static_cast<size_t>(s) * 3;
    uint8_t* to = batch->input->as<uint8_t>() + k * face_row * s;
    for (int y = 0; y < s; ++y) std::memcpy(to + y * face_row, face + y * crop_row, face_row);
  } else if (options_.visual_in_place) {  // one block of the caller's: the batch's first frame
    if (k == 0) batch->given = static_cast<const float*>(window.visual);
  } else if (window.visual) {
    std::memcpy(batch->input->as<float>() + k * visual_values, window.visual,
                visual_values * sizeof(float));
  } else {
    FillVisualInput(face, crop_row, layout_, batch->input->as<float>() + k * visual_values);
  }
  std::memcpy(batch->audio->as<float>() + k * kAudioWindowValues, window.values.data(),
              kAudioWindowValues * sizeof(float));
  batch->frames[k] = std::move(*source);
  batch->avatar_frames[k] = avatar_frame;

  lock.lock();
  batch->count++;
  stats_.frames.items++;
  stats_.frames.busy_s += Seconds(work, Clock::now());
  const bool full = batch->count == options_.batch;
  const bool last = audio_ended_ && windows_.empty();
  if (full || last || (options_.live && windows_.empty())) {
    submit_filling();
  }
  return true;
}

Status LipSyncStream::PrepareWaiting() {
  for (;;) {
    LIPSYNC_ASSIGN_OR_RETURN(bool prepared, Prepare(false));
    if (!prepared) return Status::Ok();
  }
}

void LipSyncStream::Submit(const std::shared_ptr<Batch>& batch) {
  const int64_t n = batch->count;
  const int64_t s = layout_.inner_size;
  Shape audio_shape = {n};
  audio_shape.insert(audio_shape.end(), audio_item_shape_.begin(), audio_item_shape_.end());
  runtime::Job job;
  job.audio = {DataType::kFloat32, audio_shape, batch->audio->as<float>()};
  if (options_.frame_form) {
    job.visual = {DataType::kUInt8, {n, s, s, 3}, batch->input->as<uint8_t>()};
    job.output = {DataType::kUInt8, {n, s, s, 3}, batch->output->as<uint8_t>()};
  } else {
    job.visual = {
        DataType::kFloat32, {n, 6, s, s}, batch->given ? batch->given : batch->input->as<float>()};
    job.output = {DataType::kFloat32, {n, 3, s, s}, batch->output->as<float>()};
  }
  job.priority = options_.live ? runtime::Priority::kLive : runtime::Priority::kOffline;
  job.origin = options_.origin;
  job.deadline = options_.deadline;
  job.cancelled = &dropped_;
  job.caller = this;
  job.times = &batch->times;
  job.keep_alive = batch;
  Batch* raw = batch.get();
  job.done = [this, raw](const Status& status) { BatchDone(*raw, status); };
  {
    std::lock_guard lock(mu_);
    ++in_scheduler_;
    batch->queued_at = Clock::now();
  }
  const Status queued = scheduler_.Submit(model_, std::move(job));
  if (!queued.ok()) BatchDone(*raw, queued);
}

void LipSyncStream::BatchDone(Batch& batch, const Status& status) {
  {
    std::lock_guard lock(mu_);
    batch.done = true;
    batch.status = status.ok() ? status : status.WithContext("model");
    stats_.batches++;
    stats_.infer.items += batch.count;
    stats_.infer.busy_s += Seconds(batch.queued_at, Clock::now());
    stats_.infer_cpu_s += batch.times.run_cpu_seconds;
  }
  cv_.notify_all();
  if (options_.on_batch_done) options_.on_batch_done();
  // Last: the destructor waits for this, so nothing of the stream is touched after it.
  std::lock_guard lock(mu_);
  --in_scheduler_;
  cv_.notify_all();
}

std::shared_ptr<LipSyncStream::Batch> LipSyncStream::NextBatchLocked() const {
  for (const auto& batch : open_) {
    // The filling batch is not done, whatever its count.
    if (!batch->done || batch->taken < batch->count) return batch;
  }
  return nullptr;
}

// A batch is done only after it has left the filling slot for the scheduler, so a done batch is
// one Next may take from.
bool LipSyncStream::NextReadyLocked() const {
  const std::shared_ptr<Batch> batch = NextBatchLocked();
  if (!batch) return audio_ended_ && windows_.empty();  // the end
  return batch->done;
}

bool LipSyncStream::FrameReady() const {
  std::lock_guard lock(mu_);
  return stopped_ || NextReadyLocked();
}

Result<std::optional<StreamFrame>> LipSyncStream::Next() {
  Lock lock(mu_);
  const auto start = Clock::now();
  LIPSYNC_RETURN_IF_ERROR(WaitLocked(lock, [&] { return NextReadyLocked(); }));
  stats_.paste.starved_s += Seconds(start, Clock::now());
  std::shared_ptr<Batch> batch = NextBatchLocked();
  if (!batch) return std::optional<StreamFrame>();  // every frame is taken
  if (!batch->status.ok()) {
    const Status failed = batch->status;
    lock.unlock();
    Stop(failed);
    return failed;
  }
  const size_t k = static_cast<size_t>(batch->taken++);
  lock.unlock();

  const auto work = Clock::now();
  const int s = layout_.inner_size;
  const size_t face_values = static_cast<size_t>(s) * s * 3;
  SourceFrame& source = batch->frames[k];
  std::vector<uint8_t> converted;
  const uint8_t* face = nullptr;
  if (options_.frame_form) {
    face = batch->output->as<uint8_t>() + k * face_values;
  } else {
    converted.resize(face_values);
    OutputToImage(batch->output->as<float>() + k * face_values, s, converted.data());
    face = converted.data();
  }
  StreamFrame out;
  if (source.store) {
    auto frame = source.store->Copy(source.store_index);
    if (!frame.ok()) {
      Stop(frame.status());
      return frame.status();
    }
    out.frame = std::move(*frame);
  } else {
    out.frame = source.decoded ? *source.decoded : std::move(source.frame);
  }
  if (source.crop.bgr.empty() && !options_.paste) {  // left to paste time (given faces)
    const Image* kept = source.store ? source.store->crop(source.store_index) : nullptr;
    if (kept) {
      source.crop = *kept;
    } else {
      auto crop = CropFace(out.frame, source.rect, layout_);
      if (!crop.ok()) {
        Stop(crop.status());
        return crop.status();
      }
      source.crop = std::move(*crop);
    }
  }
  Status pasted = options_.paste ? options_.paste(face, source, out.frame)
                                 : PasteFace(face, layout_, source.crop, source.rect, out.frame);
  if (!pasted.ok()) {
    Stop(pasted);
    return pasted;
  }
  out.index = batch->first + static_cast<int64_t>(k);
  out.pts_s = static_cast<double>(out.index) / options_.fps;
  out.avatar_frame = batch->avatar_frames[k];
  source = {};

  lock.lock();
  stats_.paste.items++;
  stats_.paste.busy_s += Seconds(work, Clock::now());
  if (++batch->pasted == batch->count) {  // every frame out: the batch may be filled again
    open_.erase(std::find(open_.begin(), open_.end(), batch));
    spare_.push_back(std::move(batch));
    lock.unlock();
    cv_.notify_all();
  }
  return std::optional<StreamFrame>(std::move(out));
}

size_t LipSyncStream::windows_waiting() const {
  std::lock_guard lock(mu_);
  return windows_.size();
}

int LipSyncStream::batches_open() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(open_.size());
}

bool LipSyncStream::audio_ended() const {
  std::lock_guard lock(mu_);
  return audio_ended_;
}

int64_t LipSyncStream::frames_total() const {
  std::lock_guard lock(mu_);
  return audio_ended_ ? windows_made_ : -1;
}

int64_t LipSyncStream::audio_samples() const {
  std::lock_guard lock(mu_);
  return audio_samples_;
}

StreamStats LipSyncStream::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace lipsync::stream
