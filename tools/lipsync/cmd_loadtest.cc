// `lipsync loadtest`: closed-loop (C clients, each sending its next request when the previous is
// answered), open-loop (requests at a fixed rate R, latency measured from each request's scheduled
// send time so that queueing in the client is not hidden) or streaming (S bidirectional streams)
// load against a server. Bounded by --duration and --requests.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "bench_stats.h"
#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "grpc_client.h"
#include "load_sessions.h"
#include "server/protocols/request_codec.h"

namespace lipsync::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct LoadArgs {
  std::string target = "127.0.0.1:50051";
  int concurrency = 1;
  int streams = 0;
  double rate = 0;
  double duration_s = 10;
  int64_t requests = 0;
  int batch = 1;
  int window = 4;
  int timeout_ms = 30000;
  std::string form = "frame";
  std::string api = "lipsync";
  std::string tls_ca;
  std::string json_path;
  std::string model;        // monolithic, lipsyncsrv: the avatar
  int avatar_frames = 100;  // monolithic, lipsyncsrv: the avatar's frames, which requests stay in
  SessionLoadArgs sessions;
};

// Latencies and outcomes from every client thread. For answers that say how long the engine ran
// (the LipSync API's compute_ms), the round trip minus that time is kept too: the cost of the
// server, the network and the client on top of the model, measured per request so that the
// model's own run-to-run noise cancels out.
class Recorder {
 public:
  void Add(double ms, grpc::StatusCode code, double engine_ms = -1, bool answered_error = false,
           const std::string& error = "") {
    std::lock_guard lock(mu_);
    codes_[code]++;
    if ((code != grpc::StatusCode::OK || answered_error) && first_error_.empty()) {
      first_error_ = error.substr(0, 300);
    }
    if (code != grpc::StatusCode::OK) return;
    if (answered_error) {  // a compatibility service's success=false, sent with status OK
      ++answered_errors_;
      return;
    }
    latencies_.push_back(ms);
    if (engine_ms >= 0) beyond_engine_.push_back(ms - engine_ms);
  }
  std::vector<double> latencies() const {
    std::lock_guard lock(mu_);
    return latencies_;
  }
  std::vector<double> beyond_engine() const {
    std::lock_guard lock(mu_);
    return beyond_engine_;
  }
  std::map<grpc::StatusCode, int64_t> codes() const {
    std::lock_guard lock(mu_);
    return codes_;
  }
  int64_t answered_errors() const {
    std::lock_guard lock(mu_);
    return answered_errors_;
  }
  std::string first_error() const {
    std::lock_guard lock(mu_);
    return first_error_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<double> latencies_;
  std::vector<double> beyond_engine_;
  std::map<grpc::StatusCode, int64_t> codes_;
  int64_t answered_errors_ = 0;
  std::string first_error_;
};

double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Budget {
  Clock::time_point end;
  int64_t max_requests;
  std::atomic<int64_t> issued{0};
  // Takes one request from the budget; false once time or count is spent.
  bool Take() {
    if (Clock::now() >= end) return false;
    return max_requests <= 0 || issued.fetch_add(1) < max_requests;
  }
};

struct Target {
  std::unique_ptr<lipsync::v1::LipSync::Stub> lipsync;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve;
  std::unique_ptr<CompatTarget> compat;  // monolithic or lipsyncsrv
  lipsync::v1::InferRequest request;
  inference::ModelInferRequest kserve_request;
  bool use_kserve = false;
  int timeout_ms = 30000;

  struct Outcome {
    grpc::StatusCode code;
    double engine_ms = -1;  // the server's compute_ms, where the API reports it
    bool answered_error = false;
    std::string error;
  };

  // The `index`th call of client `client`.
  Outcome CallOnce(int client = 0, int64_t index = 0) {
    if (compat) {
      const CompatCall call = compat->Call(client, index);
      return {call.code, -1, call.code == grpc::StatusCode::OK && !call.success, call.error};
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    if (use_kserve) {
      inference::ModelInferResponse response;
      return {kserve->ModelInfer(&ctx, kserve_request, &response).error_code(), -1, false, ""};
    }
    lipsync::v1::InferResponse response;
    const auto code = lipsync->Infer(&ctx, request, &response).error_code();
    return {code, response.compute_ms(), false, ""};
  }
};

void ClosedLoop(Target& target, int concurrency, Budget& budget, Recorder& rec) {
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) {
    threads.emplace_back([&, c] {
      for (int64_t i = 0; budget.Take(); ++i) {
        const auto t0 = Clock::now();
        const auto outcome = target.CallOnce(c, i);
        rec.Add(Ms(t0, Clock::now()), outcome.code, outcome.engine_ms, outcome.answered_error,
                outcome.error);
      }
    });
  }
  for (auto& t : threads) t.join();
}

void OpenLoop(Target& target, double rate, Budget& budget, Recorder& rec) {
  // Each request has a scheduled send time; a pool of senders takes them in order. Latency counts
  // from the scheduled time, so a server (or client) that falls behind shows it.
  const auto start = Clock::now();
  const auto interval = std::chrono::duration<double>(1.0 / rate);
  std::atomic<int64_t> next{0};
  const int senders = std::max(4, static_cast<int>(rate / 10));
  std::vector<std::thread> threads;
  for (int s = 0; s < std::min(senders, 256); ++s) {
    threads.emplace_back([&] {
      while (true) {
        const int64_t i = next.fetch_add(1);
        const auto scheduled =
            start + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(i));
        if (scheduled >= budget.end) return;
        if (budget.max_requests > 0 && i >= budget.max_requests) return;
        std::this_thread::sleep_until(scheduled);
        const auto outcome = target.CallOnce(0, i);
        rec.Add(Ms(scheduled, Clock::now()), outcome.code, outcome.engine_ms,
                outcome.answered_error, outcome.error);
      }
    });
  }
  for (auto& t : threads) t.join();
}

void Streams(Target& target, int streams, int window, Budget& budget, Recorder& rec) {
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    threads.emplace_back([&] {
      grpc::ClientContext ctx;
      auto stream = target.lipsync->StreamInfer(&ctx);
      std::mutex mu;
      std::condition_variable cv;
      std::map<uint64_t, Clock::time_point> sent;
      bool writer_done = false;
      std::thread reader([&] {
        lipsync::v1::StreamInferResponse response;
        while (stream->Read(&response)) {
          std::lock_guard lock(mu);
          auto it = sent.find(response.sequence());
          if (it != sent.end()) {
            rec.Add(Ms(it->second, Clock::now()), static_cast<grpc::StatusCode>(response.code()),
                    response.response().compute_ms());
            sent.erase(it);
          }
          cv.notify_all();
        }
        std::lock_guard lock(mu);
        for (size_t i = 0; i < sent.size(); ++i) rec.Add(0, grpc::StatusCode::UNAVAILABLE);
        sent.clear();
        writer_done = true;
        cv.notify_all();
      });
      lipsync::v1::StreamInferRequest message;
      *message.mutable_request() = target.request;
      for (uint64_t seq = 0; budget.Take(); ++seq) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return sent.size() < static_cast<size_t>(window) || writer_done; });
          if (writer_done) break;
          sent[seq] = Clock::now();
        }
        message.set_sequence(seq);
        if (!stream->Write(message)) break;
      }
      stream->WritesDone();
      reader.join();
      stream->Finish();
    });
  }
  for (auto& t : threads) t.join();
}

int RunLoadtest(const LoadArgs& a) {
  // The requests and answers are megabytes each, as in the server.
  platform::TuneHeapForLargeBuffers();
  if (a.form != "frame" && a.form != "tensor") {
    return ReportError(InvalidArgument("--form must be frame or tensor"));
  }
  const bool compat = a.api == "monolithic" || a.api == "lipsyncsrv";
  if (a.api != "lipsync" && a.api != "kserve" && !compat && a.api != "sessions") {
    return ReportError(
        InvalidArgument("--api must be lipsync, kserve, monolithic, lipsyncsrv or sessions"));
  }
  if (a.concurrency < 1 || a.batch < 1 || a.duration_s <= 0 || a.rate < 0 || a.streams < 0) {
    return ReportError(InvalidArgument("--concurrency, --batch, --duration must be positive"));
  }
  auto channel = MakeChannel(a.target, a.tls_ca);
  if (!channel.ok()) return ReportError(channel.status());
  if (a.api == "sessions") return RunSessionLoad(a.sessions, *channel);
  Target target;
  target.lipsync = lipsync::v1::LipSync::NewStub(*channel);
  target.kserve = inference::GRPCInferenceService::NewStub(*channel);
  target.timeout_ms = a.timeout_ms;
  if (compat) {
    if (a.model.empty())
      return ReportError(InvalidArgument("the " + a.api + " API needs an avatar"));
    if (a.batch > a.avatar_frames) {
      return ReportError(InvalidArgument("the batch is larger than the avatar's frames"));
    }
    target.compat =
        a.api == "monolithic"
            ? MakeMonolithicTarget(*channel, a.model, a.batch, a.avatar_frames, a.timeout_ms)
            : MakeLipsyncsrvTarget(*channel, a.model, a.batch, a.avatar_frames, a.timeout_ms);
  } else {
    auto info = FetchModelInfo(*target.lipsync, a.timeout_ms);
    if (!info.ok()) return ReportError(info.status());
    auto request = MakeInferRequest(*info, a.batch, a.form == "frame", "", 1);
    if (!request.ok()) return ReportError(request.status());
    target.request = std::move(*request);
    // Frame-form clients want the face back as an image, a quarter of the float tensor's bytes.
    if (a.form == "frame") target.request.set_output_form(lipsync::v1::OUTPUT_IMAGE);
  }
  if (compat && a.streams > 0) {
    return ReportError(InvalidArgument("streams are for the lipsync API"));
  }
  if (a.api == "kserve") {
    auto info = FetchModelInfo(*target.lipsync, a.timeout_ms);
    if (!info.ok()) return ReportError(info.status());
    auto k = MakeKServeRequest(*info, a.batch, 1);
    if (!k.ok()) return ReportError(k.status());
    target.kserve_request = std::move(*k);
    target.use_kserve = true;
  }

  Recorder rec;
  Budget budget;
  budget.max_requests = a.requests;
  const auto start = Clock::now();
  budget.end = start + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(a.duration_s));
  std::string mode;
  if (a.streams > 0) {
    mode = "streams";
    Streams(target, a.streams, a.window, budget, rec);
  } else if (a.rate > 0) {
    mode = "open-loop";
    OpenLoop(target, a.rate, budget, rec);
  } else {
    mode = "closed-loop";
    ClosedLoop(target, a.concurrency, budget, rec);
  }
  const double elapsed_s = std::chrono::duration<double>(Clock::now() - start).count();

  const auto lat = Summarize(rec.latencies());
  const auto beyond_samples = rec.beyond_engine();
  const auto beyond = Summarize(beyond_samples);
  const auto codes = rec.codes();
  const int64_t answered_errors = rec.answered_errors();
  int64_t ok = 0, total = 0;
  nlohmann::json code_json = nlohmann::json::object();
  for (const auto& [code, n] : codes) {
    total += n;
    if (code == grpc::StatusCode::OK) ok = n - answered_errors;
    code_json[server::GrpcCodeName(code)] = n;
  }
  const double rps = ok / elapsed_s;
  std::printf("%s load on %s: %s form, batch %d, api %s, %.1f s\n", mode.c_str(), a.target.c_str(),
              a.form.c_str(), a.batch, a.api.c_str(), elapsed_s);
  std::printf("requests: %lld ok of %lld; %.2f req/s, %.2f frames/s\n", static_cast<long long>(ok),
              static_cast<long long>(total), rps, rps * a.batch);
  std::printf("latency ms: min %.2f median %.2f p90 %.2f p95 %.2f p99 %.2f max %.2f\n", lat.min,
              lat.median, lat.p90, lat.p95, lat.p99, lat.max);
  if (!beyond_samples.empty()) {
    std::printf("latency minus the server's engine time ms: median %.3f p90 %.3f p99 %.3f\n",
                beyond.median, beyond.p90, beyond.p99);
  }
  if (answered_errors > 0) {
    std::printf("errors: success=false answers %lld\n", static_cast<long long>(answered_errors));
  }
  if (!rec.first_error().empty()) std::printf("first error: %s\n", rec.first_error().c_str());
  for (const auto& [code, n] : codes) {
    if (code != grpc::StatusCode::OK) {
      std::printf("errors: %s %lld\n", server::GrpcCodeName(code), static_cast<long long>(n));
    }
  }
  if (!a.json_path.empty()) {
    nlohmann::json j = {{"mode", mode},
                        {"target", a.target},
                        {"form", a.form},
                        {"api", a.api},
                        {"batch", a.batch},
                        {"concurrency", a.concurrency},
                        {"streams", a.streams},
                        {"rate", a.rate},
                        {"duration_s", elapsed_s},
                        {"requests_ok", ok},
                        {"requests_total", total},
                        {"requests_per_s", rps},
                        {"frames_per_s", rps * a.batch},
                        {"latency_ms", ToJson(lat)},
                        {"codes", code_json},
                        {"answered_errors", answered_errors},
                        {"first_error", rec.first_error()}};
    if (!beyond_samples.empty()) j["beyond_engine_ms"] = ToJson(beyond);
    std::ofstream(a.json_path) << j.dump(2) << "\n";
  }
  return ok > 0 ? 0 : 1;
}

}  // namespace

void AddLoadtestCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("loadtest", "Closed-, open-loop or streaming load on a server");
  auto a = std::make_shared<LoadArgs>();
  cmd->add_option("--target", a->target, "server host:port")->capture_default_str();
  cmd->add_option("--concurrency,-c", a->concurrency, "closed-loop clients")->capture_default_str();
  cmd->add_option("--streams", a->streams, "bidirectional streams instead of unary calls");
  cmd->add_option("--window", a->window, "requests in flight per stream")->capture_default_str();
  cmd->add_option("--rate", a->rate, "open loop: requests per second (0: closed loop)");
  cmd->add_option("--duration", a->duration_s, "seconds")->capture_default_str();
  cmd->add_option("--requests", a->requests, "stop after this many requests (0: no limit)");
  cmd->add_option("--batch", a->batch, "frames per request")->capture_default_str();
  cmd->add_option("--form", a->form, "frame | tensor")->capture_default_str();
  cmd->add_option("--api", a->api,
                  "lipsync | kserve (tensor form) | monolithic | lipsyncsrv (the users' old "
                  "services, requests as their clients build them) | sessions (live sessions)")
      ->capture_default_str();
  cmd->add_option("--model", a->model, "monolithic, lipsyncsrv: the avatar to ask for");
  cmd->add_option("--avatar-frames", a->avatar_frames,
                  "monolithic, lipsyncsrv: the avatar's frames (requests stay inside them)")
      ->capture_default_str();
  cmd->add_option("--models", a->sessions.models, "sessions: avatars, sessions spread over them")
      ->delimiter(',');
  cmd->add_option("--sessions-per-model", a->sessions.sessions_per_model, "sessions: per avatar")
      ->capture_default_str();
  cmd->add_option("--audio", a->sessions.audio, "sessions: the speech each session streams");
  cmd->add_option("--encoder", a->sessions.encoder,
                  "sessions: the avatars' audio encoder (to tell which chunk completes a frame)");
  cmd->add_option("--chunk-ms", a->sessions.chunk_ms,
                  "sessions: audio per chunk, sent at real time")
      ->capture_default_str();
  cmd->add_option("--keep-up-ms", a->sessions.keep_up_ms,
                  "sessions: a session keeps up while every frame comes within this")
      ->capture_default_str();
  cmd->add_option("--tls-ca", a->tls_ca, "PEM roots to trust (enables TLS)");
  cmd->add_option("--timeout-ms", a->timeout_ms, "deadline per request")->capture_default_str();
  cmd->add_option("--json", a->json_path, "write the results as JSON");
  cmd->callback([=] {
    a->sessions.json_path = a->json_path;
    *exit_code = RunLoadtest(*a);
  });
}

}  // namespace lipsync::cli
