// `lipsync loadtest --api sessions`: live sessions as real clients hold them. Each session streams
// the same speech to its avatar in chunks sent at real time (chunk k leaves k x chunk after the
// session's start), the sessions' starts spread over one chunk period. For every frame, latency is
// the time from the sending of the chunk that completed the frame's audio context (or of the end
// message, for the frames the end flushes) to the frame's arrival; each session's first frame is
// also summarised on its own (how soon a new session shows speech). Which chunk completes which
// frame is found by running the avatar's audio encoder on the speech once, chunk by chunk, as the
// server's stream does.
#include "load_sessions.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include "bench_stats.h"
#include "engine_flags.h"
#include "lipsync/audio.h"
#include "lipsync/v1/lipsync.grpc.pb.h"

namespace lipsync::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct SessionTrace {
  std::string model;
  grpc::Status status;
  std::vector<Clock::time_point> sent;  // per chunk, then the end message
  std::vector<Clock::time_point> arrived;
};

// First frame index each chunk completes, and the count after the end message flushes:
// decided[k] frames are complete once chunks 0..k-1 have arrived; decided.back() is the total.
Result<std::vector<int64_t>> FramesDecided(const std::string& encoder_path,
                                           const std::vector<float>& pcm, size_t chunk) {
  LIPSYNC_ASSIGN_OR_RETURN(auto encoder, AudioEncoder::Create(encoder_path));
  AudioFeatureStream stream(*encoder);
  std::vector<int64_t> decided = {0};
  for (size_t off = 0; off < pcm.size(); off += chunk) {
    LIPSYNC_ASSIGN_OR_RETURN(Tensor w,
                             stream.Push(pcm.data() + off, std::min(chunk, pcm.size() - off)));
    decided.push_back(decided.back() + w.shape()[0]);
  }
  LIPSYNC_ASSIGN_OR_RETURN(Tensor rest, stream.Finish());
  decided.push_back(decided.back() + rest.shape()[0]);
  return decided;
}

SessionTrace RunOne(lipsync::v1::Sessions::Stub& stub, const std::string& model,
                    const std::vector<float>& pcm, size_t chunk, Clock::time_point start,
                    std::chrono::microseconds period, int timeout_s) {
  SessionTrace trace;
  trace.model = model;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  std::this_thread::sleep_until(start);
  auto stream = stub.Session(&context);
  std::thread writer([&] {
    lipsync::v1::SessionRequest request;
    auto* s = request.mutable_start();
    s->set_model_id(model);
    s->set_sample_format(lipsync::v1::SAMPLE_FORMAT_F32LE);
    s->set_frame_format(lipsync::v1::FRAME_FORMAT_JPEG);
    s->set_pacing(lipsync::v1::PACING_AS_FAST_AS_POSSIBLE);
    if (!stream->Write(request)) return;
    size_t k = 0;
    for (size_t off = 0; off < pcm.size(); off += chunk, ++k) {
      std::this_thread::sleep_until(start + period * static_cast<int64_t>(k + 1));
      const size_t n = std::min(chunk, pcm.size() - off);
      request.set_audio(reinterpret_cast<const char*>(pcm.data() + off), n * sizeof(float));
      trace.sent.push_back(Clock::now());
      if (!stream->Write(request)) return;
    }
    request.mutable_end();
    trace.sent.push_back(Clock::now());
    stream->Write(request);
    stream->WritesDone();
  });
  lipsync::v1::SessionResponse response;
  while (stream->Read(&response)) {
    if (response.has_frame()) trace.arrived.push_back(Clock::now());
  }
  writer.join();
  trace.status = stream->Finish();
  return trace;
}

}  // namespace

int RunSessionLoad(const SessionLoadArgs& a, const std::shared_ptr<grpc::Channel>& channel) {
  if (a.models.empty()) return ReportError(InvalidArgument("sessions need at least one avatar"));
  if (a.audio.empty() || a.encoder.empty()) {
    return ReportError(
        InvalidArgument("sessions need a speech file and the avatars' audio encoder"));
  }
  if (a.chunk_ms < 10 || a.sessions_per_model < 1) {
    return ReportError(InvalidArgument("the chunk must be at least 10 ms, sessions at least 1"));
  }
  auto pcm = DecodeAudioFile(a.audio);
  if (!pcm.ok()) return ReportError(pcm.status());
  const size_t chunk = static_cast<size_t>(a.chunk_ms) * kAudioSampleRate / 1000;
  auto decided = FramesDecided(a.encoder, *pcm, chunk);
  if (!decided.ok()) return ReportError(decided.status());
  const int64_t expected = decided->back();

  auto stub = lipsync::v1::Sessions::NewStub(channel);
  const int n = static_cast<int>(a.models.size()) * a.sessions_per_model;
  const auto period = std::chrono::microseconds(static_cast<int64_t>(a.chunk_ms) * 1000);
  const auto start = Clock::now() + std::chrono::milliseconds(200);
  const double audio_s = static_cast<double>(pcm->size()) / kAudioSampleRate;
  const int timeout_s = static_cast<int>(audio_s * 4) + 60;
  std::vector<SessionTrace> traces(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    const auto offset = period * i / n;  // spread the sessions' chunks over one period
    threads.emplace_back([&, i, offset] {
      traces[static_cast<size_t>(i)] =
          RunOne(*stub, a.models[static_cast<size_t>(i) % a.models.size()], *pcm, chunk,
                 start + offset, period, timeout_s);
    });
  }
  for (auto& t : threads) t.join();
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  // Frames per second while the sessions ran: from the first session's start to the last frame.
  Clock::time_point last = start;
  for (const auto& t : traces) {
    if (!t.arrived.empty()) last = std::max(last, t.arrived.back());
  }
  const double run_s = std::max(1e-9, std::chrono::duration<double>(last - start).count());

  std::vector<double> all, first;  // every frame's latency; each session's first frame's
  int failed = 0, short_sessions = 0, kept_up = 0;
  int64_t frames = 0;
  std::string first_error;
  nlohmann::json per_session = nlohmann::json::array();
  for (const auto& t : traces) {
    if (!t.status.ok()) {
      ++failed;
      if (first_error.empty()) first_error = t.model + ": " + t.status.error_message();
      continue;
    }
    frames += static_cast<int64_t>(t.arrived.size());
    if (static_cast<int64_t>(t.arrived.size()) != expected) ++short_sessions;
    std::vector<double> lat;
    for (size_t k = 0; k + 1 < decided->size() && k < t.sent.size(); ++k) {
      for (int64_t f = (*decided)[k]; f < (*decided)[k + 1]; ++f) {
        if (f >= static_cast<int64_t>(t.arrived.size())) break;
        lat.push_back(std::chrono::duration<double, std::milli>(t.arrived[f] - t.sent[k]).count());
      }
    }
    if (!lat.empty()) first.push_back(lat.front());
    const auto s = Summarize(lat);
    // Keeping up: every frame within the bound of the chunk that completed it, so no backlog grows.
    if (s.max <= a.keep_up_ms && static_cast<int64_t>(t.arrived.size()) == expected) ++kept_up;
    per_session.push_back(
        {{"model", t.model}, {"frames", t.arrived.size()}, {"latency_ms", ToJson(s)}});
    all.insert(all.end(), lat.begin(), lat.end());
  }
  const auto lat = Summarize(all);
  const auto first_lat = Summarize(first);
  std::printf(
      "sessions: %d on %zu avatars, %.1f s of speech in %d ms chunks at real time, %.1f s\n", n,
      a.models.size(), audio_s, a.chunk_ms, wall_s);
  std::printf(
      "frames: %lld of %lld expected; %.1f frames/s in all; %d failed, %d short, %d of %d "
      "kept up (every frame within %.0f ms)\n",
      static_cast<long long>(frames), static_cast<long long>(expected * n),
      static_cast<double>(frames) / run_s, failed, short_sessions, kept_up, n, a.keep_up_ms);
  std::printf(
      "frame latency ms (chunk completing its audio -> frame): p50 %.1f p90 %.1f p99 %.1f "
      "max %.1f\n",
      lat.median, lat.p90, lat.p99, lat.max);
  std::printf("first frame latency ms (over sessions): p50 %.1f max %.1f\n", first_lat.median,
              first_lat.max);
  if (!first_error.empty()) std::printf("first error: %s\n", first_error.c_str());
  if (!a.json_path.empty()) {
    nlohmann::json j = {{"api", "sessions"},
                        {"sessions", n},
                        {"avatars", a.models.size()},
                        {"audio_s", audio_s},
                        {"chunk_ms", a.chunk_ms},
                        {"wall_s", wall_s},
                        {"frames", frames},
                        {"frames_expected", expected * n},
                        {"frames_per_s", static_cast<double>(frames) / run_s},
                        {"failed", failed},
                        {"short", short_sessions},
                        {"kept_up", kept_up},
                        {"keep_up_ms", a.keep_up_ms},
                        {"latency_ms", ToJson(lat)},
                        {"first_frame_latency_ms", ToJson(first_lat)},
                        {"first_error", first_error},
                        {"per_session", per_session}};
    std::ofstream(a.json_path) << j.dump(2) << "\n";
  }
  return failed == 0 && short_sessions == 0 ? 0 : 1;
}

}  // namespace lipsync::cli
