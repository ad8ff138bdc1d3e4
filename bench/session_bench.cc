// Live sessions against `lipsync render` on the same avatar and audio, alternated round by round in
// one process: frames per second of the Renderer (MP4, and JPEG files) and of 1..N concurrent
// sessions streaming the audio as fast as they can (JPEG frames); then the latency of each audio
// chunk of one session: from the chunk's send to the arrival of the first frame it
// decides, each chunk sent once the frames of the earlier ones have arrived (which frames a chunk
// decides is counted with a local AudioFeatureStream).
//
//   build/bench/session_bench --avatars models --avatar demo_avatar
//       --audio models/demo_speech.wav [--rounds 3] [--threads 2] [--sessions 1,4]
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "lipsync/audio.h"
#include "lipsync/render.h"
#include "server/server.h"

namespace {

using namespace lipsync;
using Clock = std::chrono::steady_clock;
using lipsync::v1::SessionRequest;
using lipsync::v1::SessionResponse;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Linear interpolation between the closest ranks (the median of two values is their mean).
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double x = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(x);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (x - static_cast<double>(i)) * (v[i + 1] - v[i]);
}

struct Args {
  std::string avatars, avatar, audio, json;
  int rounds = 3, threads = 2, batch = 4, chunk_ms = 200;
  std::vector<int> sessions = {1, 4};
};

struct SessionRun {
  bool ok = false;
  std::string error;
  int64_t frames = 0;
  std::vector<Clock::time_point> chunk_sent, frame_at;
};

// One session: streams `pcm` in chunks of `chunk` samples and records when each chunk left and
// each frame arrived. Without `wait_for` it sends as fast as flow control allows; with it, chunk k
// leaves only once the first wait_for[k] frames have arrived (all those earlier chunks decide), so
// each chunk meets an idle session and its latency has no backlog in it.
SessionRun RunSession(lipsync::v1::Sessions::Stub& stub, const std::string& avatar,
                      const std::vector<float>& pcm, size_t chunk,
                      const std::vector<int64_t>* wait_for = nullptr) {
  SessionRun run;
  grpc::ClientContext context;
  auto stream = stub.Session(&context);
  std::mutex mu;
  std::condition_variable cv;
  int64_t received = 0;
  bool reading = true;
  std::thread writer([&] {
    SessionRequest request;
    auto* start = request.mutable_start();
    start->set_model_id(avatar);
    start->set_sample_format(lipsync::v1::SAMPLE_FORMAT_F32LE);
    start->set_frame_format(lipsync::v1::FRAME_FORMAT_JPEG);
    if (!stream->Write(request)) return;
    for (size_t off = 0, k = 0; off < pcm.size(); off += chunk, ++k) {
      if (wait_for && k < wait_for->size()) {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !reading || received >= (*wait_for)[k]; });
      }
      const size_t n = std::min(chunk, pcm.size() - off);
      request.set_audio(reinterpret_cast<const char*>(pcm.data() + off), n * sizeof(float));
      run.chunk_sent.push_back(Clock::now());
      if (!stream->Write(request)) return;
    }
    request.mutable_end();
    stream->Write(request);
    stream->WritesDone();
  });
  SessionResponse response;
  while (stream->Read(&response)) {
    if (!response.has_frame()) continue;
    run.frame_at.push_back(Clock::now());
    std::lock_guard lock(mu);
    ++received;
    cv.notify_all();
  }
  {
    std::lock_guard lock(mu);
    reading = false;
    cv.notify_all();
  }
  writer.join();
  const grpc::Status status = stream->Finish();
  run.ok = status.ok();
  run.error = status.error_message();
  run.frames = static_cast<int64_t>(run.frame_at.size());
  return run;
}

int Main(const Args& args) {
  auto avatar = LoadAvatar(args.avatars + "/" + args.avatar);
  if (!avatar.ok()) return std::fprintf(stderr, "%s\n", avatar.status().ToString().c_str()), 2;
  auto pcm = DecodeAudioFile(args.audio);
  if (!pcm.ok()) return std::fprintf(stderr, "%s\n", pcm.status().ToString().c_str()), 2;
  EngineOptions engine;
  engine.intra_op_threads = args.threads;
  auto renderer = Renderer::Create(*avatar, engine);
  if (!renderer.ok()) return std::fprintf(stderr, "%s\n", renderer.status().ToString().c_str()), 2;

  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.batching.max_batch = 1;
  options.batching.preferred_batch = 1;
  options.batching.max_queue = 4;
  options.monolithic_options.avatars.root = args.avatars;
  options.monolithic_options.avatars.engine = engine;
  options.sessions.max_batch = args.batch;
  auto unet = Engine::Create(avatar->model_path(), engine);  // the server's own model (unused)
  if (!unet.ok()) return 2;
  auto srv = server::Server::Start(unet->get(), options);
  if (!srv.ok()) return std::fprintf(stderr, "%s\n", srv.status().ToString().c_str()), 2;
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = lipsync::v1::Sessions::NewStub(
      grpc::CreateCustomChannel("127.0.0.1:" + std::to_string((*srv)->port()),
                                grpc::InsecureChannelCredentials(), channel_args));

  const std::string tmp = std::filesystem::temp_directory_path() / "lipsync_session_bench";
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);
  const double audio_s = static_cast<double>(pcm->size()) / kAudioSampleRate;
  std::map<std::string, std::vector<double>> fps;
  const size_t fast_chunk = static_cast<size_t>(args.chunk_ms) * kAudioSampleRate / 1000;
  // Warm-up: one render, one session.
  RenderOptions ro;
  ro.batch = args.batch;
  (void)(*renderer)->Render(args.audio, RenderOutput::Video(tmp + "/warm.mp4"), ro);
  (void)RunSession(*stub, args.avatar, *pcm, fast_chunk);
  for (int round = 0; round < args.rounds; ++round) {
    for (const std::string& kind : {std::string("mp4"), std::string("jpg")}) {
      std::filesystem::remove_all(tmp + "/out");
      const auto out = kind == "mp4" ? RenderOutput::Video(tmp + "/out.mp4")
                                     : RenderOutput::Frames(tmp + "/out", "jpg");
      std::filesystem::remove(tmp + "/out.mp4");
      auto stats = (*renderer)->Render(args.audio, out, ro);
      if (!stats.ok()) return std::fprintf(stderr, "%s\n", stats.status().ToString().c_str()), 2;
      fps["render " + kind].push_back(stats->fps);
    }
    for (int n : args.sessions) {
      std::vector<SessionRun> runs(static_cast<size_t>(n));
      std::vector<std::thread> clients;
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        clients.emplace_back([&, i] {
          runs[static_cast<size_t>(i)] = RunSession(*stub, args.avatar, *pcm, fast_chunk);
        });
      }
      for (auto& t : clients) t.join();
      const double seconds = Since(t0);
      int64_t frames = 0;
      for (const auto& r : runs) {
        if (!r.ok) return std::fprintf(stderr, "session failed: %s\n", r.error.c_str()), 2;
        frames += r.frames;
      }
      fps["sessions x" + std::to_string(n)].push_back(static_cast<double>(frames) / seconds);
    }
  }

  // Latency: one session, each chunk sent once the frames of the earlier ones are in; which frames
  // each chunk decides is counted with a local stream.
  const size_t chunk = static_cast<size_t>(args.chunk_ms) * kAudioSampleRate / 1000;
  std::vector<int64_t> decided_before;  // frames decided before chunk k
  {
    auto encoder = AudioEncoder::Create(avatar->audio_encoder_path());
    if (!encoder.ok()) return 2;
    AudioFeatureStream stream(**encoder);
    int64_t total = 0;
    for (size_t off = 0; off < pcm->size(); off += chunk) {
      decided_before.push_back(total);
      auto w = stream.Push(pcm->data() + off, std::min(chunk, pcm->size() - off));
      if (!w.ok()) return 2;
      total += w->shape()[0];
    }
  }
  std::vector<double> latency_ms;
  for (int round = 0; round < args.rounds; ++round) {
    auto run = RunSession(*stub, args.avatar, *pcm, chunk, &decided_before);
    if (!run.ok) return std::fprintf(stderr, "session failed: %s\n", run.error.c_str()), 2;
    for (size_t k = 0; k + 1 < decided_before.size() && k < run.chunk_sent.size(); ++k) {
      const int64_t first = decided_before[k];
      if (decided_before[k + 1] == first) continue;  // this chunk decides no frame
      latency_ms.push_back(
          std::chrono::duration<double, std::milli>(run.frame_at[first] - run.chunk_sent[k])
              .count());
    }
  }
  (*srv)->Shutdown();
  std::filesystem::remove_all(tmp);

  nlohmann::json j;
  std::printf("audio %.1f s, %d rounds, %d threads, batch %d\n", audio_s, args.rounds, args.threads,
              args.batch);
  std::printf("%-16s %10s %10s %10s\n", "path", "fps med", "min", "max");
  for (const auto& [name, v] : fps) {
    std::printf("%-16s %10.2f %10.2f %10.2f\n", name.c_str(), Percentile(v, 50),
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()));
    j["fps"][name] = v;
  }
  std::printf(
      "chunk latency (%d ms chunks, each on an idle session, %zu chunks): p50 %.1f ms, p99 %.1f "
      "ms\n",
      args.chunk_ms, latency_ms.size(), Percentile(latency_ms, 50), Percentile(latency_ms, 99));
  j["latency_ms"] = {{"p50", Percentile(latency_ms, 50)},
                     {"p99", Percentile(latency_ms, 99)},
                     {"samples", latency_ms.size()},
                     {"all", latency_ms}};
  if (!args.json.empty()) std::ofstream(args.json) << j.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{"Live sessions against lipsync render on the same avatar and audio"};
  app.add_option("--avatars", args.avatars, "folder of avatar folders")->required();
  app.add_option("--avatar", args.avatar, "avatar folder name")->required();
  app.add_option("--audio", args.audio, "speech file")->required();
  app.add_option("--rounds", args.rounds)->capture_default_str();
  app.add_option("--threads", args.threads, "model threads")->capture_default_str();
  app.add_option("--batch", args.batch, "render batch and session max batch")
      ->capture_default_str();
  app.add_option("--chunk-ms", args.chunk_ms, "audio chunk")->capture_default_str();
  app.add_option("--sessions", args.sessions, "concurrent sessions per run")->delimiter(',');
  app.add_option("--json", args.json, "write the results here");
  CLI11_PARSE(app, argc, argv);
  return Main(args);
}
