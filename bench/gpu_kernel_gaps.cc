// The kernels of one forward pass on the GPU's own timeline (CUPTI activity records): per
// configuration and batch, how many kernels ran, their span, the busy time and the idle gaps
// between them, median over many forward passes. At batch 1 the gaps, not the kernels' work, are
// most of the time; this measures what fewer launches and the second stream change. One JSON
// object per line (kind "timeline"), read by bench/gpu_table.py.
//
//   gpu_kernel_gaps --model demo.onnx --batch 1,32 --iterations 30 --warmup 10
#include <cuda_runtime_api.h>
#include <cupti.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_stats.h"
#include "device_buffer.h"
#include "kernel_timeline.h"
#include "lipsync/engine.h"

namespace lipsync::bench {
namespace {

// CUPTI hands its records over in buffers of its asking; the kernels' intervals are collected
// here until the next forward pass takes them.
std::mutex g_mu;
std::vector<KernelInterval> g_kernels;
uint64_t g_dropped = 0;

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = 8 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext context, uint32_t stream, uint8_t* buffer, size_t,
                              size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard lock(g_mu);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    g_kernels.push_back({k->start, k->end});
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(context, stream, &dropped) == CUPTI_SUCCESS) {
    g_dropped += dropped;
  }
  std::free(buffer);
}

Status Cupti(CUptiResult r, const char* what) {
  if (r == CUPTI_SUCCESS) return Status::Ok();
  const char* text = nullptr;
  cuptiGetResultString(r, &text);
  return Internal(std::string("CUPTI ") + what + ": " + (text ? text : "unknown error"));
}

struct Config {
  const char* name;  // as gpu_engine_bench names it
  CudaKernels kernels;
  bool side_stream;
};

struct Args {
  std::string model, json;
  std::vector<int64_t> batches{1, 32};
  int iterations = 30, warmup = 10;
};

double Median(std::vector<double> v) { return cli::Summarize(std::move(v)).median; }

// Forward passes of the frame form on device buffers, each traced on its own.
Status Measure(const Args& args, const Config& config, int64_t n, std::ofstream& json) {
  EngineOptions o;
  o.backend = "cuda";
  o.precision = Precision::kFloat16;
  o.cuda.cuda_graph = true;
  o.cuda.kernels = config.kernels;
  o.cuda.side_stream = config.side_stream;
  o.max_batch = n;
  LIPSYNC_ASSIGN_OR_RETURN(auto engine, Engine::Create(args.model, o));
  const int s = engine->frame_form().layout.inner_size;
  Tensor faces(DataType::kUInt8, {n, s, s, 3}), audio(DataType::kFloat32, {n, 32, 16, 16}),
      out(DataType::kUInt8, {n, s, s, 3});
  std::mt19937 rng(1);
  for (int64_t i = 0; i < faces.element_count(); ++i) {
    faces.data_as<uint8_t>()[i] = static_cast<uint8_t>(rng() & 0xff);
  }
  for (int64_t i = 0; i < audio.element_count(); ++i) {
    audio.data_as<float>()[i] = static_cast<float>(rng() % 1000) / 1000.0f;
  }
  DeviceBuffer d_faces(faces.byte_size()), d_audio(audio.byte_size()), d_out(out.byte_size());
  const TensorView faces_dev = OnDevice(faces, d_faces), audio_dev = OnDevice(audio, d_audio);
  const MutableTensorView out_dev = OutputOnDevice(out, d_out);
  const auto forward = [&] { return engine->RunFrames({faces_dev, audio_dev}, out_dev); };
  for (int i = 0; i < args.warmup; ++i) LIPSYNC_RETURN_IF_ERROR(forward());

  std::vector<double> kernels, span, busy, gaps, largest, host;
  LIPSYNC_RETURN_IF_ERROR(
      Cupti(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enabling kernel records"));
  Status status = Status::Ok();
  for (int i = 0; i < args.iterations && status.ok(); ++i) {
    {
      std::lock_guard lock(g_mu);
      g_kernels.clear();
    }
    const auto t0 = std::chrono::steady_clock::now();
    status = forward();
    cudaDeviceSynchronize();
    host.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    if (status.ok()) status = Cupti(cuptiActivityFlushAll(1), "flushing the records");
    std::lock_guard lock(g_mu);
    const TimelineSummary t = SummarizeTimeline(g_kernels);
    kernels.push_back(t.kernels);
    span.push_back(t.span_us);
    busy.push_back(t.busy_us);
    gaps.push_back(t.gaps_us);
    largest.push_back(t.largest_gap_us);
  }
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  LIPSYNC_RETURN_IF_ERROR(status);
  const nlohmann::json line = {{"kind", "timeline"},
                               {"config", config.name},
                               {"batch", n},
                               {"forwards", args.iterations},
                               {"kernels", Median(kernels)},
                               {"span_us", Median(span)},
                               {"busy_us", Median(busy)},
                               {"gaps_us", Median(gaps)},
                               {"largest_gap_us", Median(largest)},
                               {"host_us", Median(host)},
                               {"dropped_records", g_dropped}};
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
  if (json) json << line.dump() << "\n" << std::flush;
  return Status::Ok();
}

}  // namespace
}  // namespace lipsync::bench

int main(int argc, char** argv) {
  lipsync::bench::Args args;
  CLI::App app{"the kernels and the gaps between them in one forward pass, on the GPU's timeline"};
  app.add_option("--model", args.model, "ONNX model with the frame form")->required();
  app.add_option("--batch", args.batches, "batch sizes")->delimiter(',');
  app.add_option("--iterations", args.iterations, "forward passes traced per configuration");
  app.add_option("--warmup", args.warmup);
  app.add_option("--json", args.json, "also write the JSON lines here");
  CLI11_PARSE(app, argc, argv);
  using lipsync::CudaKernels;
  // The plan before fused kernels and the second stream, and the default with both.
  const lipsync::bench::Config configs[] = {
      {"fp16 graph unfused, one stream", CudaKernels::kUnfused, false},
      {"fp16 graph", CudaKernels::kAuto, true},
  };
  const lipsync::Status registered =
      lipsync::bench::Cupti(cuptiActivityRegisterCallbacks(lipsync::bench::BufferRequested,
                                                           lipsync::bench::BufferCompleted),
                            "registering the record buffers");
  if (!registered.ok()) {
    std::fprintf(stderr, "error: %s\n", registered.ToString().c_str());
    return 2;
  }
  std::ofstream json;
  if (!args.json.empty()) json.open(args.json);
  int failed = 0;
  for (const auto& config : configs) {
    for (int64_t n : args.batches) {
      const lipsync::Status s = lipsync::bench::Measure(args, config, n, json);
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s, batch %lld: %s\n", config.name, static_cast<long long>(n),
                     s.ToString().c_str());
        ++failed;
      }
    }
  }
  return failed == 0 ? 0 : 2;
}
