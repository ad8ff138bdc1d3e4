// `lipsync bench`: latency and throughput of one model on one backend, cold and warm figures
// apart, as a table and as JSON (the same schema as python/lipsync/torch_bench.py).

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <mutex>
#include <thread>

#include "bench_stats.h"
#include "commands.h"
#include "core/platform.h"
#include "engine_flags.h"
#include "random_inputs.h"

namespace lipsync::cli {
namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

struct BenchArgs {
  EngineFlags engine;
  std::vector<int64_t> batches = {1};
  int iterations = 0;
  double duration_s = 10.0;
  int warmup = 5;
  int runs = 1;  // runs at once, each on its own engine with its share of the threads
  std::string json_path;
  std::string implementation;
  uint64_t seed = 0;
};

std::string IsoNow() {
  char buf[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return buf;
}

// What the engines' loops share: the timed window starts when every engine is warm.
struct SharedClock {
  std::mutex mu;
  std::condition_variable all_warm;
  size_t engines = 1, warm = 0;
  Clock::time_point start, deadline;
  std::vector<double> samples;  // latencies of the timed runs, ms
  int taken = 0;                // timed runs started
};

// One engine's loop: first run, warm-up, then timed runs until the deadline or the iteration
// count (counted over all engines).
Status TimeEngine(Engine& engine, const BenchArgs& args, int64_t batch, SharedClock& shared,
                  double* first_ms) {
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<Tensor> inputs,
                           MakeRandomInputs(engine.info(), batch, args.seed));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<Shape> shapes, engine.OutputShapes(batch));
  std::vector<Tensor> outputs;
  std::vector<MutableTensorView> out_views;
  for (size_t i = 0; i < shapes.size(); ++i) {
    outputs.emplace_back(engine.info().outputs[i].dtype, shapes[i]);
    out_views.push_back(outputs.back().mutable_view());
  }
  const auto in_views = Views(inputs);
  auto t0 = Clock::now();
  Status warmed = engine.Run(in_views, out_views);
  if (first_ms) *first_ms = MsSince(t0);
  for (int i = 0; i < args.warmup && warmed.ok(); ++i) warmed = engine.Run(in_views, out_views);
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    if (++shared.warm == shared.engines) {  // the last one starts the clock for all
      shared.start = Clock::now();
      shared.deadline = shared.start + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(args.duration_s));
      shared.all_warm.notify_all();
    }
    shared.all_warm.wait(lock, [&] { return shared.warm == shared.engines; });
  }
  LIPSYNC_RETURN_IF_ERROR(warmed);  // after the count, so that the others do not wait forever
  auto last_report = Clock::now();
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(shared.mu);
      const bool done = args.iterations > 0
                            ? shared.taken >= args.iterations
                            : Clock::now() >= shared.deadline && shared.samples.size() >= 3;
      if (done) return Status::Ok();
      ++shared.taken;
      if (first_ms && std::chrono::duration<double>(Clock::now() - last_report).count() > 5.0) {
        std::fprintf(stderr, "  batch %lld: %zu runs so far\n", static_cast<long long>(batch),
                     shared.samples.size());
        last_report = Clock::now();
      }
    }
    t0 = Clock::now();
    LIPSYNC_RETURN_IF_ERROR(engine.Run(in_views, out_views));
    const double ms = MsSince(t0);
    std::lock_guard<std::mutex> lock(shared.mu);
    shared.samples.push_back(ms);
  }
}

// Every engine at once on `batch` (one engine: the plain latency loop). Frames per second is the
// median's for one engine and the measured throughput for several.
Result<nlohmann::json> BenchBatch(std::vector<std::unique_ptr<Engine>>& engines,
                                  const BenchArgs& args, int64_t batch) {
  SharedClock shared;
  shared.engines = engines.size();
  double first_ms = 0;
  std::vector<Status> status(engines.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < engines.size(); ++i) {
    threads.emplace_back([&, i] {
      status[i] = TimeEngine(*engines[i], args, batch, shared, i == 0 ? &first_ms : nullptr);
    });
  }
  for (auto& t : threads) t.join();
  for (const Status& s : status) LIPSYNC_RETURN_IF_ERROR(s);
  const double total_s = std::chrono::duration<double>(Clock::now() - shared.start).count();
  const std::vector<double>& samples = shared.samples;
  const LatencySummary s = Summarize(samples);
  const double throughput = static_cast<double>(batch) * samples.size() / total_s;
  return nlohmann::json{
      {"batch", batch},
      {"runs_at_once", engines.size()},
      {"first_inference_ms", first_ms},
      {"warmup", args.warmup},
      {"iterations", samples.size()},
      {"latency_ms", ToJson(s)},
      {"ms_per_frame", s.median / static_cast<double>(batch) / engines.size()},
      {"fps", engines.size() == 1 ? static_cast<double>(batch) * 1000.0 / s.median : throughput},
      {"throughput_fps", throughput},
      {"samples_ms", samples}};
}

int RunBench(const BenchArgs& args) {
  auto options = ToEngineOptions(args.engine);
  if (!options.ok()) return ReportError(options.status());
  for (int64_t b : args.batches) {
    if (b < 1 || b > options->max_batch) {
      return ReportError(InvalidArgument("--batch " + std::to_string(b) + " is outside 1.." +
                                         std::to_string(options->max_batch)));
    }
  }
  if (args.iterations < 0 || args.warmup < 0 || !(args.duration_s > 0)) {
    return ReportError(
        InvalidArgument("--iterations and --warmup take 0 or more runs, --duration "
                        "a positive number of seconds"));
  }
  if (args.runs < 1 || args.runs > 16) {
    return ReportError(
        InvalidArgument("--runs " + std::to_string(args.runs) + " is outside 1..16"));
  }
  const EngineOptions per_run = OptionsPerRun(*options, args.runs);  // as render's runs on the CPU
  auto t0 = Clock::now();
  std::vector<std::unique_ptr<Engine>> engines;
  for (int i = 0; i < args.runs; ++i) {
    auto engine = Engine::Create(args.engine.model, per_run);
    if (!engine.ok()) return ReportError(engine.status());
    engines.push_back(std::move(*engine));
  }
  const double create_ms = MsSince(t0) / args.runs;
  const ModelInfo& info = engines[0]->info();
  const std::string impl = args.implementation.empty()
                               ? "lipsync-" + info.backend + "-" + info.provider
                               : args.implementation;

  std::fprintf(stderr, "%s: %s, session created in %.1f ms\n", impl.c_str(), info.path.c_str(),
               create_ms);
  nlohmann::json results = nlohmann::json::array();
  for (int64_t batch : args.batches) {
    std::fprintf(stderr, "  batch %lld ...\n", static_cast<long long>(batch));
    auto r = BenchBatch(engines, args, batch);
    if (!r.ok()) return ReportError(r.status().WithContext("batch " + std::to_string(batch)));
    results.push_back(*r);
  }

  std::printf("%-26s %5s %9s %9s %9s %9s %9s %9s %9s %9s\n", "implementation", "batch", "first",
              "min", "median", "p90", "p99", "max", "ms/frame", "FPS");
  for (const auto& r : results) {
    const auto& l = r["latency_ms"];
    std::printf("%-26s %5lld %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.1f\n", impl.c_str(),
                r["batch"].get<long long>(), r["first_inference_ms"].get<double>(),
                l["min"].get<double>(), l["median"].get<double>(), l["p90"].get<double>(),
                l["p99"].get<double>(), l["max"].get<double>(), r["ms_per_frame"].get<double>(),
                r["fps"].get<double>());
  }
  const double rss = PeakRssMiB();
  std::printf("session creation %.1f ms, peak RSS %.1f MiB (latencies in ms per batch)\n",
              create_ms, rss);

  if (!args.json_path.empty()) {
    nlohmann::json j = {{"implementation", impl},
                        {"model", info.path},
                        {"backend", info.backend},
                        {"provider", info.provider},
                        {"threads", args.engine.threads},
                        {"runs_at_once", args.runs},
                        {"precision", args.engine.precision == "fp16" ? "float16" : "float32"},
                        {"session_create_ms", create_ms},
                        {"date", IsoNow()},
                        {"host", platform::HostName()},
                        {"results", results},
                        {"peak_rss_mb", rss}};
    std::ofstream out(platform::PathFromUtf8(args.json_path));
    out << j.dump(2) << "\n";
    if (!out) return ReportError(Internal("cannot write '" + args.json_path + "'"));
    std::printf("wrote %s\n", args.json_path.c_str());
  }
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("bench", "Benchmark a model: cold start, warm latency, FPS");
  auto args = std::make_shared<BenchArgs>();
  AddEngineFlags(cmd, &args->engine);
  cmd->add_option("--batch,-b", args->batches, "batch sizes, e.g. 1,4,8")
      ->delimiter(',')
      ->capture_default_str();
  auto* iters = cmd->add_option("--iterations,-n", args->iterations, "timed runs per batch");
  cmd->add_option("--duration", args->duration_s, "seconds of timed runs per batch")
      ->excludes(iters)
      ->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "untimed runs before timing")->capture_default_str();
  cmd->add_option("--runs", args->runs,
                  "runs at once, each on its own copy of the model with its share of --threads "
                  "(FPS is then the measured throughput)")
      ->capture_default_str();
  cmd->add_option("--json", args->json_path, "write results as JSON");
  cmd->add_option("--implementation", args->implementation, "name in the report");
  cmd->add_option("--seed", args->seed, "seed of the random inputs")->capture_default_str();
  cmd->callback([=] { *exit_code = RunBench(*args); });
}

}  // namespace lipsync::cli
