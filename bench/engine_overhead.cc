// How much does lipsync's Engine add over calling ONNX Runtime directly?
//
// Runs the same model, inputs and thread settings through a bare Ort::Session::Run (inputs and
// outputs wrapped once, outside the timed loop) and through lipsync::Engine::Run (validation and
// wrapping inside the timed loop, as users call it), alternating the two call by call so that
// machine noise hits both alike. Prints medians and percentiles of each and their ratio.
#include <onnxruntime_cxx_api.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "bench_stats.h"
#include "lipsync/engine.h"
#include "random_inputs.h"

namespace {

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Engine::Run vs bare ONNX Runtime Run"};
  std::string model, json_path;
  int threads = 2, iterations = 100, warmup = 5;
  int64_t batch = 1;
  app.add_option("--model", model)->required();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--iterations", iterations, "timed runs of each")->capture_default_str();
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  lipsync::EngineOptions options;
  options.intra_op_threads = threads;
  auto engine = lipsync::Engine::Create(model, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "error: %s\n", engine.status().ToString().c_str());
    return 2;
  }
  const lipsync::ModelInfo& info = (*engine)->info();
  auto inputs = lipsync::cli::MakeRandomInputs(info, batch, 0);
  auto shapes = (*engine)->OutputShapes(batch);
  if (!inputs.ok() || !shapes.ok()) {
    std::fprintf(stderr, "error: cannot make inputs for batch %lld\n",
                 static_cast<long long>(batch));
    return 2;
  }
  std::vector<lipsync::Tensor> outputs;
  std::vector<lipsync::MutableTensorView> out_views;
  for (const auto& s : *shapes) {
    outputs.emplace_back(lipsync::DataType::kFloat32, s);
    out_views.push_back(outputs.back().mutable_view());
  }
  const auto in_views = lipsync::cli::Views(*inputs);

  // The bare session: same file, same settings as the engine's ORT backend.
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "overhead");
  Ort::SessionOptions so;
  so.SetIntraOpNumThreads(threads);
  so.SetInterOpNumThreads(1);
  so.SetGraphOptimizationLevel(ORT_ENABLE_ALL);
  so.SetExecutionMode(ORT_SEQUENTIAL);
  Ort::Session session(env, model.c_str(), so);
  auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<Ort::Value> ort_in, ort_out;
  std::vector<const char*> in_names, out_names;
  for (size_t i = 0; i < in_views.size(); ++i) {
    ort_in.push_back(Ort::Value::CreateTensor<float>(
        mem, const_cast<float*>(in_views[i].as<float>()), lipsync::ElementCount(in_views[i].shape),
        in_views[i].shape.data(), in_views[i].shape.size()));
    in_names.push_back(info.inputs[i].name.c_str());
  }
  std::vector<lipsync::Tensor> bare_outputs;
  for (size_t i = 0; i < shapes->size(); ++i) {
    bare_outputs.emplace_back(lipsync::DataType::kFloat32, (*shapes)[i]);
    ort_out.push_back(Ort::Value::CreateTensor<float>(mem, bare_outputs.back().data_as<float>(),
                                                      bare_outputs.back().element_count(),
                                                      (*shapes)[i].data(), (*shapes)[i].size()));
    out_names.push_back(info.outputs[i].name.c_str());
  }
  Ort::RunOptions run_options;
  auto bare_run = [&] {
    session.Run(run_options, in_names.data(), ort_in.data(), ort_in.size(), out_names.data(),
                ort_out.data(), ort_out.size());
  };

  for (int i = 0; i < warmup; ++i) {
    bare_run();
    if (!(*engine)->Run(in_views, out_views).ok()) return 2;
  }
  std::vector<double> bare_ms, engine_ms;
  for (int i = 0; i < iterations; ++i) {
    // Alternate which goes first so neither always follows the other.
    for (int k = 0; k < 2; ++k) {
      const bool bare_turn = (i + k) % 2 == 0;
      auto t0 = Clock::now();
      if (bare_turn) {
        bare_run();
        bare_ms.push_back(MsSince(t0));
      } else {
        lipsync::Status s = (*engine)->Run(in_views, out_views);
        engine_ms.push_back(MsSince(t0));
        if (!s.ok()) {
          std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
          return 2;
        }
      }
    }
  }
  const auto b = lipsync::cli::Summarize(bare_ms);
  const auto e = lipsync::cli::Summarize(engine_ms);
  const double overhead_pct = (e.median / b.median - 1.0) * 100.0;
  std::printf("%-22s %9s %9s %9s %9s %9s\n", "call", "min", "median", "p90", "p99", "mean");
  std::printf("%-22s %9.3f %9.3f %9.3f %9.3f %9.3f\n", "bare OrtSession::Run", b.min, b.median,
              b.p90, b.p99, b.mean);
  std::printf("%-22s %9.3f %9.3f %9.3f %9.3f %9.3f\n", "lipsync Engine::Run", e.min, e.median,
              e.p90, e.p99, e.mean);
  std::printf("engine overhead at the median: %+.2f%% (batch %lld, %d threads, %d runs each)\n",
              overhead_pct, static_cast<long long>(batch), threads, iterations);
  if (!json_path.empty()) {
    nlohmann::json j = {{"model", model},
                        {"batch", batch},
                        {"threads", threads},
                        {"iterations", iterations},
                        {"bare_ms", lipsync::cli::ToJson(b)},
                        {"engine_ms", lipsync::cli::ToJson(e)},
                        {"overhead_pct_median", overhead_pct}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
