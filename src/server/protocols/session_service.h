// lipsync.v1.Sessions: live audio sessions on avatars. A client opens a session on an avatar,
// streams 16 kHz mono PCM in chunks of any size and receives the avatar's lip-synced frames, 25
// per second of audio, equal to `lipsync render`'s frames on the same audio.
//
// Each session runs on its own thread, on a live lip-sync stream (pipeline/stream, the one render
// runs on): the audio becomes windows as it arrives (its context carries across chunks), the
// frames go to the device's scheduler as live work, batched with every other caller of the avatar
// (other sessions, the monolithic and lipsyncsrv services), and come back pasted, to be encoded
// and written in order. It reads the next audio chunk only when the frames of the last one are
// under way, so a fast sender waits in gRPC's flow control instead of filling memory.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "lipsync/status.h"
#include "lipsync/v1/lipsync.grpc.pb.h"
#include "pipeline/stream/lipsync_stream.h"
#include "pipeline/stream/stored_frames.h"
#include "server/core/avatar_registry.h"
#include "server/core/metrics.h"
#include "server/protocols/call_gate.h"

namespace lipsync::server {

struct SessionOptions {
  int max_batch = 8;  // live frames per UNet run on one avatar, from all its sessions
  // A session whose client sends nothing (while the server waits for audio) or takes no frame for
  // this long is ended with DEADLINE_EXCEEDED and its resources freed.
  std::chrono::milliseconds idle_timeout{30000};
  int max_sessions = 64;      // more at once are refused with RESOURCE_EXHAUSTED
  int batches_under_way = 2;  // batches of frames one session has under way at most
  // Avatars whose frames are kept encoded: each session has up to `decode_ahead` of its next
  // frames decoded (a decoded frame's memory each) on `decode_threads` threads that every session
  // shares (0: half the cores, at least one), so that its audio finds them ready.
  int decode_ahead = 6;
  int decode_threads = 0;
};

// Largest audio chunk: 10 s at 16 kHz.
constexpr size_t kMaxSessionChunkSamples = 10 * kAudioSampleRate;

// One audio chunk as float samples: S16LE scaled by 1/32768 (as FFmpeg converts), F32LE as it is.
// InvalidArgument for an unknown format, a byte count that is not whole samples, a chunk over
// 10 s, and NaN or infinite samples.
Result<std::vector<float>> DecodeSessionAudio(const std::string& bytes,
                                              lipsync::v1::SampleFormat format);

// The stream options of a live session on `avatar`: up to `max_batch` frames per job, as live
// work of origin "session", `open` batches under way at most.
stream::StreamOptions LiveStreamOptions(const LoadedAvatar& avatar, int max_batch, int open);

class WorkerPool;

class SessionService final : public lipsync::v1::Sessions::CallbackService {
 public:
  // `gate` refuses new sessions while the server drains.
  SessionService(AvatarRegistry* registry, SessionOptions options, Metrics* metrics,
                 const CallGate* gate);
  ~SessionService() override;

  grpc::ServerBidiReactor<lipsync::v1::SessionRequest, lipsync::v1::SessionResponse>* Session(
      grpc::CallbackServerContext* call) override;

  int64_t open_sessions() const { return open_.load(); }
  // Avatars with open sessions now.
  int live_avatars() const;
  const SessionOptions& options() const { return options_; }

 private:
  friend class SessionCall;
  AvatarRegistry* registry_;
  SessionOptions options_;
  Metrics* metrics_;
  const CallGate* gate_;
  void JoinAvatar(const LoadedAvatar* avatar);
  void LeaveAvatar(const LoadedAvatar* avatar);
  mutable std::mutex avatars_mu_;
  std::map<const LoadedAvatar*, int> live_avatars_;  // open sessions per avatar
  // The shared decode threads, started by the first session that needs them.
  stream::Executor DecodeExecutor();
  std::once_flag decode_once_;
  std::unique_ptr<WorkerPool> decode_pool_;
  std::atomic<int64_t> open_{0};
  std::atomic<uint64_t> next_id_{1};
};

}  // namespace lipsync::server
