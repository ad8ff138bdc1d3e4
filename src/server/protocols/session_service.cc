#include "server/protocols/session_service.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>

#include "lipsync/frames.h"
#include "server/protocols/monolithic_service.h"  // kCompositeJpegQuality
#include "server/protocols/request_codec.h"

namespace lipsync::server {

using lipsync::v1::SessionRequest;
using lipsync::v1::SessionResponse;
using lipsync::v1::SessionStart;

static_assert(std::endian::native == std::endian::little, "audio chunks are copied as they are");

Result<std::vector<float>> DecodeSessionAudio(const std::string& bytes,
                                              lipsync::v1::SampleFormat format) {
  size_t width = 0;
  if (format == lipsync::v1::SAMPLE_FORMAT_S16LE) width = 2;
  if (format == lipsync::v1::SAMPLE_FORMAT_F32LE) width = 4;
  if (width == 0) {
    return InvalidArgument(
        "sample_format must be SAMPLE_FORMAT_S16LE or SAMPLE_FORMAT_F32LE, got " +
        std::to_string(static_cast<int>(format)));
  }
  if (bytes.size() % width != 0) {
    return InvalidArgument("audio chunk of " + std::to_string(bytes.size()) +
                           " bytes is not whole samples of " + std::to_string(width) + " bytes");
  }
  const size_t n = bytes.size() / width;
  if (n > kMaxSessionChunkSamples) {
    return InvalidArgument("audio chunk of " + std::to_string(n) + " samples is over " +
                           std::to_string(kMaxSessionChunkSamples) + " (10 s at 16 kHz)");
  }
  std::vector<float> pcm(n);
  if (width == 2) {
    for (size_t i = 0; i < n; ++i) {
      int16_t v;
      std::memcpy(&v, bytes.data() + 2 * i, 2);
      pcm[i] = static_cast<float>(v) * (1.0f / 32768.0f);
    }
  } else {
    std::memcpy(pcm.data(), bytes.data(), bytes.size());
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(pcm[i])) {
        return InvalidArgument("audio chunk sample " + std::to_string(i) + " is " +
                               (std::isnan(pcm[i]) ? "NaN" : "infinite"));
      }
    }
  }
  return pcm;
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kInboxMessages = 2;  // chunks read ahead of the session thread at most
constexpr int64_t kWindowValues = 32 * 16 * 16;

// A frame between its model input and its output message.
struct FrameWork {
  int64_t index = 0;
  int64_t avatar_frame = 0;
  Image crop;
};

struct Group {
  std::shared_ptr<FrameGroup> frames;
  std::vector<FrameWork> work;
};

}  // namespace

// One session: the gRPC reactor, and the thread that does the session's work (Serve).
class SessionCall final : public grpc::ServerBidiReactor<SessionRequest, SessionResponse> {
 public:
  SessionCall(SessionService* service, grpc::CallbackServerContext* call)
      : service_(service), call_(call), signal_(std::make_shared<SessionSignal>()) {
    service_->open_++;
    service_->metrics_->AddSessions(1);
    last_message_ = Clock::now();
    StartRead(&incoming_);
    // Under the lock, so that thread_ is set before Main() can finish the call (and OnDone read
    // it).
    std::lock_guard lock(signal_->mu);
    thread_ = std::thread([this] { Main(); });
  }

  void OnReadDone(bool ok) override {
    std::lock_guard lock(signal_->mu);
    if (!ok) {
      read_closed_ = true;
    } else {
      inbox_.push_back(std::move(incoming_));
      incoming_.Clear();
      last_message_ = Clock::now();
      if (inbox_.size() < kInboxMessages && !finishing_) {
        StartRead(&incoming_);
      } else {
        read_paused_ = true;
      }
    }
    signal_->cv.notify_all();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(signal_->mu);
    writing_ = false;
    if (!ok) broken_ = true;
    signal_->cv.notify_all();
  }

  void OnCancel() override {
    std::lock_guard lock(signal_->mu);
    cancelled_ = true;
    signal_->cv.notify_all();
  }

  void OnDone() override {
    if (thread_.get_id() == std::this_thread::get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
    delete this;
  }

 private:
  void Main() {
    { std::lock_guard lock(signal_->mu); }  // the constructor has set thread_
    grpc::Status status = ToGrpcStatus(Serve());
    if (!status.ok()) {
      spdlog::debug("session {} ended: {} {}", id_, GrpcCodeName(status.error_code()),
                    status.error_message());
    }
    // Free everything the session holds before the call ends.
    for (auto& group : in_flight_) group.frames->cancelled = true;
    in_flight_.clear();
    stream_.reset();
    batcher_.reset();
    avatar_.reset();
    service_->open_--;
    service_->metrics_->AddSessions(-1);
    service_->metrics_->RecordRequest("Session", GrpcCodeName(status.error_code()));
    {
      std::unique_lock lock(signal_->mu);
      finishing_ = true;  // no read or write starts after this
      signal_->cv.wait(lock, [&] { return !writing_; });
    }
    Finish(status);
  }

  // Waits until `ready` holds, the call is cancelled (kCancelled) or `deadline` passes
  // (kDeadlineExceeded with `why`).
  template <typename Pred>
  Status WaitLocked(std::unique_lock<std::mutex>& lock, Pred ready, Clock::time_point deadline,
                    const char* why) {
    while (!ready()) {
      if (cancelled_ || broken_) return Status(StatusCode::kCancelled, "session cancelled");
      if (signal_->cv.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
        if (cancelled_ || broken_) return Status(StatusCode::kCancelled, "session cancelled");
        return Status(StatusCode::kDeadlineExceeded, why);
      }
    }
    return Status::Ok();
  }

  Status Write(Clock::time_point not_before) {
    std::unique_lock lock(signal_->mu);
    if (not_before > Clock::now()) {  // pacing: nothing to wait for but the time or a cancel
      Status paced = WaitLocked(
          lock, [] { return false; }, not_before, "");
      if (paced.code() == StatusCode::kCancelled) return paced;
    }
    if (cancelled_ || broken_) return Status(StatusCode::kCancelled, "session cancelled");
    writing_ = true;
    StartWrite(&outgoing_);
    Status written = WaitLocked(
        lock, [&] { return !writing_; }, Clock::now() + service_->options_.idle_timeout,
        "the client took no frame for the idle timeout");
    if (written.code() == StatusCode::kDeadlineExceeded) call_->TryCancel();
    return written;
  }

  // The next message from the client, or nullopt when it half-closed.
  Result<std::optional<SessionRequest>> NextMessage() {
    std::unique_lock lock(signal_->mu);
    LIPSYNC_RETURN_IF_ERROR(WaitLocked(
        lock, [&] { return !inbox_.empty() || read_closed_; },
        last_message_ + service_->options_.idle_timeout,
        "no message from the client for the idle timeout"));
    if (inbox_.empty()) return std::optional<SessionRequest>();
    SessionRequest message = std::move(inbox_.front());
    inbox_.pop_front();
    if (read_paused_ && !read_closed_ && !finishing_) {
      read_paused_ = false;
      StartRead(&incoming_);
    }
    return std::optional<SessionRequest>(std::move(message));
  }

  Status Open(const SessionStart& start);
  Status Serve();
  Status TakeAudio(const SessionRequest& message);
  void SubmitGroup();
  Status Deliver(Group& group);

  SessionService* service_;
  grpc::CallbackServerContext* call_;
  std::shared_ptr<SessionSignal> signal_;
  std::thread thread_;

  // Guarded by signal_->mu.
  SessionRequest incoming_;
  std::deque<SessionRequest> inbox_;
  Clock::time_point last_message_;
  bool read_closed_ = false, read_paused_ = false, writing_ = false;
  bool cancelled_ = false, broken_ = false, finishing_ = false;

  // The session thread's own.
  std::string id_;
  SessionStart options_;
  std::shared_ptr<LoadedAvatar> avatar_;
  std::shared_ptr<AvatarBatcher> batcher_;
  std::unique_ptr<AudioFeatureStream> stream_;
  std::optional<FrameSequence> sequence_;
  std::deque<std::pair<int64_t, std::vector<float>>> windows_;  // not yet submitted
  std::deque<Group> in_flight_;
  int64_t next_window_ = 0;
  int64_t frames_sent_ = 0;
  bool audio_ended_ = false;
  std::optional<Clock::time_point> first_frame_at_;
  SessionResponse outgoing_;
};

Status SessionCall::Open(const SessionStart& start) {
  options_ = start;
  id_ = start.session_id();
  if (id_.empty()) id_ = std::to_string(service_->next_id_++);
  if (service_->open_.load() > service_->options_.max_sessions) {
    return ResourceExhausted(std::to_string(service_->options_.max_sessions) +
                             " sessions are open, the most this server holds");
  }
  LIPSYNC_RETURN_IF_ERROR(DecodeSessionAudio("", start.sample_format()).status());
  if (start.jpeg_quality() < 0 || start.jpeg_quality() > 100) {
    return InvalidArgument("jpeg_quality must be 1..100 (0: 75), got " +
                           std::to_string(start.jpeg_quality()));
  }
  if (!lipsync::v1::FrameFormat_IsValid(start.frame_format()) ||
      !lipsync::v1::Pacing_IsValid(start.pacing()) ||
      !lipsync::v1::AvatarWalk_IsValid(start.walk())) {
    return InvalidArgument("unknown frame_format, pacing or walk value");
  }
  LIPSYNC_ASSIGN_OR_RETURN(avatar_, service_->registry_->Load(start.model_id()));
  const FrameOrder order =
      start.walk() == lipsync::v1::WALK_LOOP ? FrameOrder::kLoop : FrameOrder::kPingPong;
  auto sequence = FrameSequence::Create(
      avatar_->avatar.frame_count(), order,
      start.has_start_frame() ? start.start_frame() : FrameSequence::kDefaultStart);
  if (!sequence.ok()) return sequence.status().WithContext("avatar '" + start.model_id() + "'");
  sequence_ = *sequence;
  batcher_ = service_->batchers_.Acquire(avatar_);
  stream_ = std::make_unique<AudioFeatureStream>(*avatar_->encoder, MelOptions{},
                                                 avatar_->avatar.manifest().fps);
  avatar_->RecordRequest();  // a session counts as one request; the scheduler adds its time
  spdlog::debug("session {} opened on '{}' peer={}", id_, start.model_id(), call_->peer());

  auto* started = outgoing_.mutable_started();
  started->set_session_id(id_);
  started->set_width(avatar_->avatar.width());
  started->set_height(avatar_->avatar.height());
  started->set_fps(avatar_->avatar.manifest().fps);
  started->set_avatar_frames(avatar_->avatar.frame_count());
  started->set_start_frame(sequence_->start());
  return Write(Clock::now());
}

Status SessionCall::TakeAudio(const SessionRequest& message) {
  Result<Tensor> windows = Tensor();
  if (message.has_start()) return InvalidArgument("a session takes one start message, first");
  if (message.has_audio()) {
    LIPSYNC_ASSIGN_OR_RETURN(auto pcm,
                             DecodeSessionAudio(message.audio(), options_.sample_format()));
    if (pcm.empty()) return Status::Ok();  // a keep-alive
    windows = stream_->Push(pcm.data(), pcm.size());
  } else {  // end of audio, or the client half-closed
    audio_ended_ = true;
    windows = stream_->Finish();
  }
  if (!windows.ok()) return windows.status().WithContext("session audio");
  const int64_t count = windows->element_count() / kWindowValues;
  const float* values = windows->data_as<float>();
  for (int64_t i = 0; i < count; ++i) {
    windows_.emplace_back(next_window_++, std::vector<float>(values + i * kWindowValues,
                                                             values + (i + 1) * kWindowValues));
  }
  if (audio_ended_ && next_window_ == 0) {
    return InvalidArgument("the session's audio is too short for one frame (at least " +
                           std::to_string((kMelWindowFrames - 1) * kMelHop) + " samples)");
  }
  return Status::Ok();
}

// Cuts the face crops of up to a batch of waiting windows and hands them to the avatar's worker.
void SessionCall::SubmitGroup() {
  const LoadedAvatar& a = *avatar_;
  Group group;
  group.frames = std::make_shared<FrameGroup>();
  group.frames->signal = signal_;
  const size_t n = std::min<size_t>(windows_.size(), static_cast<size_t>(batcher_->max_batch()));
  for (size_t k = 0; k < n; ++k) {
    auto& [index, audio] = windows_.front();
    FrameWork work;
    work.index = index;
    work.avatar_frame = (*sequence_)(index);
    const auto frame = static_cast<size_t>(work.avatar_frame);
    auto crop = CropFace(a.backgrounds[frame], a.avatar.crop_rects()[frame], a.layout);
    auto inner = crop.ok() ? PrepareFace(*crop, a.layout) : crop.status();
    if (!inner.ok()) {  // checked when the avatar loaded; a failure here is a bug
      group.frames->status = inner.status();
      group.frames->done = true;
      break;
    }
    work.crop = std::move(*crop);
    group.frames->jobs.push_back({index, std::move(inner->bgr), std::move(audio)});
    group.work.push_back(std::move(work));
    windows_.pop_front();
  }
  if (!group.frames->done) batcher_->Submit(group.frames);
  in_flight_.push_back(std::move(group));
}

// Pastes the group's faces into their frames and writes them in order, paced when asked.
Status SessionCall::Deliver(Group& group) {
  const LoadedAvatar& a = *avatar_;
  const double fps = a.avatar.manifest().fps;
  const bool bgr = options_.frame_format() == lipsync::v1::FRAME_FORMAT_BGR;
  const int quality =
      options_.jpeg_quality() == 0 ? kCompositeJpegQuality : options_.jpeg_quality();
  for (size_t k = 0; k < group.work.size(); ++k) {
    FrameWork& work = group.work[k];
    const auto frame_index = static_cast<size_t>(work.avatar_frame);
    Image frame = a.backgrounds[frame_index];
    LIPSYNC_RETURN_IF_ERROR(PasteFace(group.frames->jobs[k].face.data(), a.layout, work.crop,
                                      a.avatar.crop_rects()[frame_index], frame));
    auto* out = outgoing_.mutable_frame();
    out->set_index(work.index);
    out->set_pts_s(static_cast<double>(work.index) / fps);
    out->set_avatar_frame(work.avatar_frame);
    out->set_width(frame.width);
    out->set_height(frame.height);
    if (bgr) {
      out->set_format(lipsync::v1::FRAME_FORMAT_BGR);
      out->set_data(frame.bgr.data(), frame.bgr.size());
    } else {
      out->set_format(lipsync::v1::FRAME_FORMAT_JPEG);
      LIPSYNC_ASSIGN_OR_RETURN(*out->mutable_data(), EncodeJpeg(frame, quality));
    }
    Clock::time_point not_before = Clock::now();
    if (options_.pacing() == lipsync::v1::PACING_REAL_TIME) {
      if (!first_frame_at_) first_frame_at_ = Clock::now();
      not_before = *first_frame_at_ + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(work.index / fps));
    }
    LIPSYNC_RETURN_IF_ERROR(Write(not_before));
    ++frames_sent_;
    service_->metrics_->AddSessionFramesSent(1);
  }
  return Status::Ok();
}

Status SessionCall::Serve() {
  LIPSYNC_ASSIGN_OR_RETURN(auto first, NextMessage());
  if (!first) return InvalidArgument("the session ended before its start message");
  if (!first->has_start()) return InvalidArgument("a session's first message must be start");
  LIPSYNC_RETURN_IF_ERROR(Open(first->start()));

  const size_t groups_limit = static_cast<size_t>(std::max(1, service_->options_.groups_in_flight));
  for (;;) {
    while (!windows_.empty() && in_flight_.size() < groups_limit) SubmitGroup();
    bool front_done = false;
    if (!in_flight_.empty()) {
      std::lock_guard lock(signal_->mu);
      front_done = in_flight_.front().frames->done;
    }
    if (front_done) {
      Group group = std::move(in_flight_.front());
      in_flight_.pop_front();
      LIPSYNC_RETURN_IF_ERROR(group.frames->status);
      LIPSYNC_RETURN_IF_ERROR(Deliver(group));
      continue;
    }
    if (audio_ended_ && windows_.empty() && in_flight_.empty()) return Status::Ok();
    if (!audio_ended_ && windows_.empty()) {
      bool have_message = false;
      {
        std::lock_guard lock(signal_->mu);
        have_message = !inbox_.empty() || read_closed_;
      }
      // Wait for the client only when no frame is under way.
      if (have_message || in_flight_.empty()) {
        LIPSYNC_ASSIGN_OR_RETURN(auto message, NextMessage());
        LIPSYNC_RETURN_IF_ERROR(TakeAudio(message ? *message : SessionRequest()));
        continue;
      }
    }
    // Frames are under way: wait for the oldest group (or a message, which may be read now).
    std::unique_lock lock(signal_->mu);
    const auto& front = in_flight_.front().frames;
    const bool may_read = !audio_ended_ && windows_.empty();
    LIPSYNC_RETURN_IF_ERROR(WaitLocked(
        lock, [&] { return front->done || (may_read && (!inbox_.empty() || read_closed_)); },
        Clock::now() + std::chrono::hours(24), ""));
  }
}

SessionService::SessionService(AvatarRegistry* registry, SessionOptions options, Metrics* metrics)
    : registry_(registry),
      options_(options),
      metrics_(metrics),
      batchers_(options.max_batch, metrics) {
  batchers_.Observe(registry_->scheduler());
}

SessionService::~SessionService() = default;

grpc::ServerBidiReactor<SessionRequest, SessionResponse>* SessionService::Session(
    grpc::CallbackServerContext* call) {
  return new SessionCall(this, call);
}

}  // namespace lipsync::server
