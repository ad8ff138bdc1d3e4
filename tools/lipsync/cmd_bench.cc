// `lipsync bench`: latency and throughput of one model on one backend, cold and warm figures
// apart, as a table and as JSON (the same schema as python/lipsync/torch_bench.py).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "bench_stats.h"
#include "commands.h"
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

std::string HostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

Result<nlohmann::json> BenchBatch(Engine& engine, const BenchArgs& args, int64_t batch) {
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
  LIPSYNC_RETURN_IF_ERROR(engine.Run(in_views, out_views));
  const double first_ms = MsSince(t0);
  for (int i = 0; i < args.warmup; ++i) LIPSYNC_RETURN_IF_ERROR(engine.Run(in_views, out_views));

  std::vector<double> samples;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(args.duration_s);
  auto last_report = start;
  while (true) {
    if (args.iterations > 0 ? static_cast<int>(samples.size()) >= args.iterations
                            : (Clock::now() >= deadline && samples.size() >= 3)) {
      break;
    }
    t0 = Clock::now();
    LIPSYNC_RETURN_IF_ERROR(engine.Run(in_views, out_views));
    samples.push_back(MsSince(t0));
    if (std::chrono::duration<double>(Clock::now() - last_report).count() > 5.0) {
      std::fprintf(stderr, "  batch %lld: %zu runs so far\n", static_cast<long long>(batch),
                   samples.size());
      last_report = Clock::now();
    }
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
  const LatencySummary s = Summarize(samples);
  return nlohmann::json{{"batch", batch},
                        {"first_inference_ms", first_ms},
                        {"warmup", args.warmup},
                        {"iterations", samples.size()},
                        {"latency_ms", ToJson(s)},
                        {"ms_per_frame", s.median / static_cast<double>(batch)},
                        {"fps", static_cast<double>(batch) * 1000.0 / s.median},
                        {"throughput_fps", static_cast<double>(batch) * samples.size() / total_s},
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
  auto t0 = Clock::now();
  auto engine = Engine::Create(args.engine.model, *options);
  if (!engine.ok()) return ReportError(engine.status());
  const double create_ms = MsSince(t0);
  const ModelInfo& info = (*engine)->info();
  const std::string impl = args.implementation.empty()
                               ? "lipsync-" + info.backend + "-" + info.provider
                               : args.implementation;

  std::fprintf(stderr, "%s: %s, session created in %.1f ms\n", impl.c_str(), info.path.c_str(),
               create_ms);
  nlohmann::json results = nlohmann::json::array();
  for (int64_t batch : args.batches) {
    std::fprintf(stderr, "  batch %lld ...\n", static_cast<long long>(batch));
    auto r = BenchBatch(**engine, args, batch);
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
                        {"precision", args.engine.precision == "fp16" ? "float16" : "float32"},
                        {"session_create_ms", create_ms},
                        {"date", IsoNow()},
                        {"host", HostName()},
                        {"results", results},
                        {"peak_rss_mb", rss}};
    std::ofstream out(args.json_path);
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
  cmd->add_option("--json", args->json_path, "write results as JSON");
  cmd->add_option("--implementation", args->implementation, "name in the report");
  cmd->add_option("--seed", args->seed, "seed of the random inputs")->capture_default_str();
  cmd->callback([=] { *exit_code = RunBench(*args); });
}

}  // namespace lipsync::cli
