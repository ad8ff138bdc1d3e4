#include "server/protocols/session_service.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <thread>

#include "core/platform.h"
#include "lipsync/frames.h"
#include "runtime/catch_all.h"
#include "server/core/worker_pool.h"
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

stream::StreamOptions LiveStreamOptions(const LoadedAvatar& avatar, int max_batch, int open) {
  stream::StreamOptions options;
  options.fps = avatar.avatar.manifest().fps;
  options.batch = max_batch;
  options.live = true;
  options.origin = runtime::Origin::kSession;
  options.max_batches = open;
  return options;
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kInboxMessages = 2;  // chunks read ahead of the session thread at most

// What the session thread waits on: gRPC's reactor callbacks and the stream's finished batches
// signal it.
struct SessionSignal {
  std::mutex mu;
  std::condition_variable cv;
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
    // What the session's work throws (a failed allocation) ends this session, not the server.
    grpc::Status status = ToGrpcStatus(runtime::CatchAll("session", [&] { return Serve(); }));
    if (!status.ok()) {
      spdlog::debug("session {} ended: {} {}", id_, GrpcCodeName(status.error_code()),
                    status.error_message());
    }
    // Free everything the session holds before the call ends (the stream drops its queued frames
    // and waits for a batch that is running).
    stream_.reset();
    frames_.reset();
    if (avatar_) service_->LeaveAvatar(avatar_.get());
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
  Status Deliver(const stream::StreamFrame& frame);

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
  std::unique_ptr<stream::StoredFrames> frames_;
  std::unique_ptr<stream::LipSyncStream> stream_;  // before frames_ and avatar_ go
  int64_t frames_sent_ = 0;
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
  if (!sequence.ok()) return sequence.status().WithContext("avatar " + Quoted(start.model_id()));
  service_->JoinAvatar(avatar_.get());
  stream::StoredFramesOptions frame_options;
  if (avatar_->frames.storage() == stream::FrameStorage::kEncoded) {
    frame_options.executor = service_->DecodeExecutor();
    frame_options.decode_ahead = service_->options_.decode_ahead;
  }
  frames_ = std::make_unique<stream::StoredFrames>(avatar_->frames, avatar_->avatar.crop_rects(),
                                                   avatar_->layout, std::move(frame_options));
  stream::StreamOptions so = LiveStreamOptions(*avatar_, service_->options_.max_batch,
                                               service_->options_.batches_under_way);
  so.on_batch_done = [signal = signal_] {
    std::lock_guard lock(signal->mu);  // the session thread is waiting or about to look
    signal->cv.notify_all();
  };
  stream_ = std::make_unique<stream::LipSyncStream>(*avatar_->scheduler, avatar_->scheduled,
                                                    *avatar_->encoder, *frames_, *sequence,
                                                    avatar_->layout, so);
  avatar_->RecordRequest();  // a session counts as one request; the scheduler adds its time
  spdlog::debug("session {} opened on '{}' peer={}", id_, start.model_id(), call_->peer());

  auto* started = outgoing_.mutable_started();
  started->set_session_id(id_);
  started->set_width(avatar_->avatar.width());
  started->set_height(avatar_->avatar.height());
  started->set_fps(avatar_->avatar.manifest().fps);
  started->set_avatar_frames(avatar_->avatar.frame_count());
  started->set_start_frame(sequence->start());
  return Write(Clock::now());
}

Status SessionCall::TakeAudio(const SessionRequest& message) {
  if (message.has_start()) return InvalidArgument("a session takes one start message, first");
  if (message.has_audio()) {
    LIPSYNC_ASSIGN_OR_RETURN(auto pcm,
                             DecodeSessionAudio(message.audio(), options_.sample_format()));
    if (pcm.empty()) return Status::Ok();  // a keep-alive
    Status pushed = stream_->Push(pcm.data(), pcm.size());
    return pushed.ok() ? pushed : pushed.WithContext("session audio");
  }
  // End of audio, or the client half-closed.
  Status finished = stream_->Finish();
  if (!finished.ok()) return finished.WithContext("session audio");
  if (stream_->frames_total() == 0) {
    return InvalidArgument("the session's audio is too short for one frame (at least " +
                           std::to_string((kMelWindowFrames - 1) * kMelHop) + " samples)");
  }
  return Status::Ok();
}

// Encodes one frame and writes it, paced when asked.
Status SessionCall::Deliver(const stream::StreamFrame& frame) {
  const double fps = avatar_->avatar.manifest().fps;
  auto* out = outgoing_.mutable_frame();
  out->set_index(frame.index);
  out->set_pts_s(frame.pts_s);
  out->set_avatar_frame(frame.avatar_frame);
  out->set_width(frame.frame.width);
  out->set_height(frame.frame.height);
  if (options_.frame_format() == lipsync::v1::FRAME_FORMAT_BGR) {
    out->set_format(lipsync::v1::FRAME_FORMAT_BGR);
    out->set_data(frame.frame.bgr.data(), frame.frame.bgr.size());
  } else {
    const int quality =
        options_.jpeg_quality() == 0 ? kCompositeJpegQuality : options_.jpeg_quality();
    out->set_format(lipsync::v1::FRAME_FORMAT_JPEG);
    LIPSYNC_ASSIGN_OR_RETURN(*out->mutable_data(), EncodeJpeg(frame.frame, quality));
  }
  Clock::time_point not_before = Clock::now();
  if (options_.pacing() == lipsync::v1::PACING_REAL_TIME) {
    if (!first_frame_at_) first_frame_at_ = Clock::now();
    not_before = *first_frame_at_ + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(frame.index / fps));
  }
  LIPSYNC_RETURN_IF_ERROR(Write(not_before));
  ++frames_sent_;
  service_->metrics_->AddSessionFramesSent(1);
  return Status::Ok();
}

// The session's loop: hand waiting frames to the scheduler, send the frames that are ready, and
// read the client's next chunk only when no window waits (so a fast sender waits in gRPC's flow
// control) and either a message is there or nothing is under way.
Status SessionCall::Serve() {
  LIPSYNC_ASSIGN_OR_RETURN(auto first, NextMessage());
  if (!first) return InvalidArgument("the session ended before its start message");
  if (!first->has_start()) return InvalidArgument("a session's first message must be start");
  LIPSYNC_RETURN_IF_ERROR(Open(first->start()));

  for (;;) {
    LIPSYNC_RETURN_IF_ERROR(stream_->PrepareWaiting());
    if (stream_->FrameReady()) {
      LIPSYNC_ASSIGN_OR_RETURN(auto frame, stream_->Next());
      if (!frame) return Status::Ok();  // every frame sent
      LIPSYNC_RETURN_IF_ERROR(Deliver(*frame));
      continue;
    }
    const bool may_read = !stream_->audio_ended() && stream_->windows_waiting() == 0;
    if (may_read) {
      bool have_message = false;
      {
        std::lock_guard lock(signal_->mu);
        have_message = !inbox_.empty() || read_closed_;
      }
      if (have_message || stream_->batches_open() == 0) {
        LIPSYNC_ASSIGN_OR_RETURN(auto message, NextMessage());
        LIPSYNC_RETURN_IF_ERROR(TakeAudio(message ? *message : SessionRequest()));
        continue;
      }
    }
    // Frames are under way: wait for the next one (or a message, which may be read now).
    std::unique_lock lock(signal_->mu);
    LIPSYNC_RETURN_IF_ERROR(WaitLocked(
        lock,
        [&] { return stream_->FrameReady() || (may_read && (!inbox_.empty() || read_closed_)); },
        Clock::now() + std::chrono::hours(24), ""));
  }
}

SessionService::SessionService(AvatarRegistry* registry, SessionOptions options, Metrics* metrics,
                               const CallGate* gate)
    : registry_(registry), options_(options), metrics_(metrics), gate_(gate) {
  runtime::Scheduler& scheduler = registry_->scheduler();
  scheduler.SetLiveMaxBatch(options_.max_batch);
  scheduler.SetBatchListener([metrics](const runtime::BatchRecord& r) {
    const int frames = r.by_origin[static_cast<size_t>(runtime::Origin::kSession)];
    if (frames == 0 || !metrics) return;
    // Frames and time are the scheduler's own metrics; these say how sessions shared batches.
    metrics->RecordSessionBatch(frames, r.callers);
  });
}

void SessionService::JoinAvatar(const LoadedAvatar* avatar) {
  std::lock_guard lock(avatars_mu_);
  ++live_avatars_[avatar];
}

void SessionService::LeaveAvatar(const LoadedAvatar* avatar) {
  std::lock_guard lock(avatars_mu_);
  auto it = live_avatars_.find(avatar);
  if (it != live_avatars_.end() && --it->second == 0) live_avatars_.erase(it);
}

int SessionService::live_avatars() const {
  std::lock_guard lock(avatars_mu_);
  return static_cast<int>(live_avatars_.size());
}

SessionService::~SessionService() = default;

stream::Executor SessionService::DecodeExecutor() {
  constexpr int kDecodeNice = 10;
  std::call_once(decode_once_, [this] {
    int threads = options_.decode_threads;
    if (threads <= 0)
      threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2);
    // Below the sessions and the model: a frame decoded ahead uses the time they leave.
    decode_pool_ = std::make_unique<WorkerPool>(threads, [] {
      platform::NameThisThread("frame-decode");
      platform::LowerThisThreadPriority(kDecodeNice);
    });
  });
  return [pool = decode_pool_.get()](std::function<void()> work) { pool->Post(std::move(work)); };
}

grpc::ServerBidiReactor<SessionRequest, SessionResponse>* SessionService::Session(
    grpc::CallbackServerContext* call) {
  if (gate_->closed()) return new RefusedStream<SessionRequest, SessionResponse>();
  return new SessionCall(this, call);
}

}  // namespace lipsync::server
