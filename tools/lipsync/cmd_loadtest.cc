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
#include "engine_flags.h"
#include "grpc_client.h"
#include "server/request_codec.h"

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
};

// Latencies and outcomes from every client thread. For answers that say how long the engine ran
// (the LipSync API's compute_ms), the round trip minus that time is kept too: the cost of the
// server, the network and the client on top of the model, measured per request so that the
// model's own run-to-run noise cancels out.
class Recorder {
 public:
  void Add(double ms, grpc::StatusCode code, double engine_ms = -1) {
    std::lock_guard lock(mu_);
    codes_[code]++;
    if (code != grpc::StatusCode::OK) return;
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

 private:
  mutable std::mutex mu_;
  std::vector<double> latencies_;
  std::vector<double> beyond_engine_;
  std::map<grpc::StatusCode, int64_t> codes_;
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
  lipsync::v1::InferRequest request;
  inference::ModelInferRequest kserve_request;
  bool use_kserve = false;
  int timeout_ms = 30000;

  struct Outcome {
    grpc::StatusCode code;
    double engine_ms = -1;  // the server's compute_ms, where the API reports it
  };

  Outcome CallOnce() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
    if (use_kserve) {
      inference::ModelInferResponse response;
      return {kserve->ModelInfer(&ctx, kserve_request, &response).error_code()};
    }
    lipsync::v1::InferResponse response;
    const auto code = lipsync->Infer(&ctx, request, &response).error_code();
    return {code, response.compute_ms()};
  }
};

void ClosedLoop(Target& target, int concurrency, Budget& budget, Recorder& rec) {
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c) {
    threads.emplace_back([&] {
      while (budget.Take()) {
        const auto t0 = Clock::now();
        const auto outcome = target.CallOnce();
        rec.Add(Ms(t0, Clock::now()), outcome.code, outcome.engine_ms);
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
        const auto outcome = target.CallOnce();
        rec.Add(Ms(scheduled, Clock::now()), outcome.code, outcome.engine_ms);
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
  if (a.form != "frame" && a.form != "tensor") {
    return ReportError(InvalidArgument("--form must be frame or tensor"));
  }
  if (a.api != "lipsync" && a.api != "kserve") {
    return ReportError(InvalidArgument("--api must be lipsync or kserve"));
  }
  if (a.concurrency < 1 || a.batch < 1 || a.duration_s <= 0 || a.rate < 0 || a.streams < 0) {
    return ReportError(InvalidArgument("--concurrency, --batch, --duration must be positive"));
  }
  auto channel = MakeChannel(a.target, a.tls_ca);
  if (!channel.ok()) return ReportError(channel.status());
  Target target;
  target.lipsync = lipsync::v1::LipSync::NewStub(*channel);
  target.kserve = inference::GRPCInferenceService::NewStub(*channel);
  target.timeout_ms = a.timeout_ms;
  auto info = FetchModelInfo(*target.lipsync, a.timeout_ms);
  if (!info.ok()) return ReportError(info.status());
  auto request = MakeInferRequest(*info, a.batch, a.form == "frame", "", 1);
  if (!request.ok()) return ReportError(request.status());
  target.request = std::move(*request);
  // Frame-form clients want the face back as an image, a quarter of the float tensor's bytes.
  if (a.form == "frame") target.request.set_output_form(lipsync::v1::OUTPUT_IMAGE);
  if (a.api == "kserve") {
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
  int64_t ok = 0, total = 0;
  nlohmann::json code_json = nlohmann::json::object();
  for (const auto& [code, n] : codes) {
    total += n;
    if (code == grpc::StatusCode::OK) ok = n;
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
                        {"codes", code_json}};
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
  cmd->add_option("--api", a->api, "lipsync | kserve (tensor form)")->capture_default_str();
  cmd->add_option("--tls-ca", a->tls_ca, "PEM roots to trust (enables TLS)");
  cmd->add_option("--timeout-ms", a->timeout_ms, "deadline per request")->capture_default_str();
  cmd->add_option("--json", a->json_path, "write the results as JSON");
  cmd->callback([=] { *exit_code = RunLoadtest(*a); });
}

}  // namespace lipsync::cli
