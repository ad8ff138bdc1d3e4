// lipsync's CUDA backend on one GPU: the frame form (and the tensor form for the default), float16
// and float32, CUDA graph on and off, the fused kernels chosen at load against the unfused steps
// and against every group on its first checked fused kernel, the audio branch on its own stream
// or not, host buffers and device buffers, at several batch sizes; the kernels each engine chose
// (per group: the variant, its time and the unfused steps' time) and its kernels per forward pass;
// then accuracy checks (float16 against float32, frame form against tensor form, CUDA against
// ONNX Runtime on the CPU). One JSON object per line on stdout (or --json), read by
// bench/gpu_table.py.
//
//   gpu_engine_bench --model demo.onnx --batch 1,32 --iterations 20 --warmup 5
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "bench_stats.h"
#include "device_buffer.h"
#include "kernel_report.h"
#include "lipsync/engine.h"
#include "lipsync/face.h"
#include "lipsync/npy.h"

namespace lipsync {
namespace {

using bench::DeviceBuffer;
using bench::OnDevice;
using bench::OutputOnDevice;

// The same frames in both forms: faces, audio, and the visual input FillVisualInput makes.
struct Inputs {
  Tensor faces, audio, visual;
};

Inputs MakeInputs(const Engine& engine, int64_t n, uint32_t seed) {
  const FrameFormInfo& form = engine.frame_form();
  const int s = form.layout.inner_size;
  std::mt19937 rng(seed);
  Inputs in{Tensor(DataType::kUInt8, {n, s, s, 3}), Tensor(DataType::kFloat32, {n, 32, 16, 16}),
            Tensor(DataType::kFloat32, {n, 6, s, s})};
  for (int64_t i = 0; i < in.faces.element_count(); ++i) {
    in.faces.data_as<uint8_t>()[i] = static_cast<uint8_t>(rng() & 0xff);
  }
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t i = 0; i < in.audio.element_count(); ++i) in.audio.data_as<float>()[i] = u(rng);
  const size_t plane = static_cast<size_t>(s) * s;
  for (int64_t f = 0; f < n; ++f) {
    FillVisualInput(in.faces.data_as<uint8_t>() + f * 3 * plane, form.layout,
                    in.visual.data_as<float>() + f * 6 * plane);
  }
  return in;
}

std::vector<TensorView> ModelInputs(const Engine& engine, const TensorView& visual,
                                    const TensorView& audio) {
  std::vector<TensorView> v(2);
  v[engine.frame_form().visual_index] = visual;
  v[engine.frame_form().audio_index] = audio;
  return v;
}

template <typename F>
Result<cli::LatencySummary> Time(F&& call, int warmup, int iterations) {
  for (int i = 0; i < warmup; ++i) LIPSYNC_RETURN_IF_ERROR(call());
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    LIPSYNC_RETURN_IF_ERROR(call());
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return cli::Summarize(std::move(ms));
}

struct Args {
  std::string model, json, reference;
  std::vector<int64_t> batches{1, 8, 32};
  int iterations = 50, warmup = 5;
  std::string cuda_kernels = "auto";  // "unfused": every configuration without fused kernels
  bool one_stream = false;            // every configuration without the second stream
};

class Report {
 public:
  explicit Report(const std::string& path) {
    if (!path.empty()) file_.open(path);
  }
  void Emit(const nlohmann::json& j) {
    const std::string line = j.dump();
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (file_) file_ << line << "\n" << std::flush;
  }

 private:
  std::ofstream file_;
};

// One way of running the CUDA backend.
struct Config {
  const char* name;
  Precision precision;
  bool graph;
  CudaKernels kernels;
  bool side_stream;
  bool tensors;  // also time the tensor form
};

const char* KernelsName(CudaKernels k) {
  switch (k) {
    case CudaKernels::kAuto:
      return "auto";
    case CudaKernels::kFused:
      return "fused";
    case CudaKernels::kUnfused:
      break;
  }
  return "unfused";
}

Result<std::unique_ptr<Engine>> MakeEngine(const std::string& model, const std::string& backend,
                                           Precision precision, int64_t max_batch,
                                           CudaKernels kernels = CudaKernels::kAuto,
                                           bool graph = false, bool side_stream = true) {
  EngineOptions o;
  o.backend = backend;
  o.precision = precision;
  o.cuda.cuda_graph = graph;
  o.cuda.kernels = kernels;
  o.cuda.side_stream = side_stream;
  o.max_batch = max_batch;
  return Engine::Create(model, o);
}

CudaKernels Restricted(const Args& args, CudaKernels k) {
  return args.cuda_kernels == "unfused" ? CudaKernels::kUnfused : k;
}

// The engines of the checks take the speed runs' largest batch too, so that they share the
// backend's kernel choice (made once per architecture, precision and batch bound).
int64_t MaxBatch(const Args& args) {
  return *std::max_element(args.batches.begin(), args.batches.end());
}

Status Speed(const Args& args, Report& report) {
  // The default (fused kernels chosen at load, the audio branch on its own stream) with graphs in
  // both forms; against it, in the frame form: the unfused steps on one stream (the plan before
  // either), every group on its first checked fused kernel, one stream, no graph, and float32.
  const Config configs[] = {
      {"fp16 graph", Precision::kFloat16, true, CudaKernels::kAuto, true, true},
      {"fp16 graph unfused, one stream", Precision::kFloat16, true, CudaKernels::kUnfused, false,
       false},
      {"fp16 graph fused", Precision::kFloat16, true, CudaKernels::kFused, true, false},
      {"fp16 graph one stream", Precision::kFloat16, true, CudaKernels::kAuto, false, false},
      {"fp16", Precision::kFloat16, false, CudaKernels::kAuto, true, false},
      {"fp32 graph", Precision::kFloat32, true, CudaKernels::kAuto, true, false},
  };
  for (const Config& config : configs) {
    const Precision precision = config.precision;
    const bool graph = config.graph;
    const CudaKernels kernels = Restricted(args, config.kernels);
    const auto t0 = std::chrono::steady_clock::now();
    const bool side_stream = config.side_stream && !args.one_stream;
    LIPSYNC_ASSIGN_OR_RETURN(auto engine, MakeEngine(args.model, "cuda", precision, MaxBatch(args),
                                                     kernels, graph, side_stream));
    report.Emit(
        {{"kind", "kernels"},
         {"config", config.name},
         {"cuda_kernels", KernelsName(kernels)},
         {"load_s", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()},
         {"report", cli::KernelReportJson(engine->info().kernels)}});
    const int s = engine->frame_form().layout.inner_size;
    for (int64_t n : args.batches) {
      Inputs in = MakeInputs(*engine, n, 1);
      Tensor out_planes(DataType::kFloat32, {n, 3, s, s});
      Tensor out_images(DataType::kUInt8, {n, s, s, 3});
      DeviceBuffer d_faces(in.faces.byte_size()), d_audio(in.audio.byte_size()),
          d_visual(in.visual.byte_size()), d_planes(out_planes.byte_size()),
          d_images(out_images.byte_size());
      const TensorView faces_dev = OnDevice(in.faces, d_faces);
      const TensorView audio_dev = OnDevice(in.audio, d_audio);
      const TensorView visual_dev = OnDevice(in.visual, d_visual);
      const MutableTensorView planes_dev = OutputOnDevice(out_planes, d_planes),
                              images_dev = OutputOnDevice(out_images, d_images);
      struct Variant {
        const char* form;
        const char* io;
        std::function<Status()> call;
      };
      Engine& e = *engine;
      const std::vector<Variant> variants = {
          {"frames", "host",
           [&] {
             return e.RunFrames({in.faces.view(), in.audio.view()}, out_images.mutable_view());
           }},
          {"frames", "device",
           [&] {
             return e.RunFrames({faces_dev, audio_dev}, images_dev);
           }},
          {"tensors", "host",
           [&] {
             return e.Run(ModelInputs(e, in.visual.view(), in.audio.view()),
                          {out_planes.mutable_view()});
           }},
          {"tensors", "device",
           [&] { return e.Run(ModelInputs(e, visual_dev, audio_dev), {planes_dev}); }},
      };
      for (const auto& v : variants) {
        if (std::string(v.form) == "tensors" && !config.tensors) continue;
        LIPSYNC_ASSIGN_OR_RETURN(cli::LatencySummary t, Time(v.call, args.warmup, args.iterations));
        report.Emit({{"kind", "speed"},
                     {"impl", "lipsync cuda"},
                     {"config", config.name},
                     {"form", v.form},
                     {"precision", precision == Precision::kFloat16 ? "fp16" : "fp32"},
                     {"cuda_graph", graph},
                     {"cuda_kernels", KernelsName(kernels)},
                     {"side_stream", side_stream},
                     {"io", v.io},
                     {"batch", n},
                     {"median_ms", t.median},
                     {"p90_ms", t.p90},
                     {"p99_ms", t.p99},
                     {"fps", n * 1000.0 / t.median}});
      }
    }
  }
  return Status::Ok();
}

// Share of bytes within 1 of each other, and the largest float difference.
double ShareWithinOne(const Tensor& a, const Tensor& b) {
  int64_t close = 0;
  for (int64_t i = 0; i < a.element_count(); ++i) {
    close += std::abs(int(a.data_as<uint8_t>()[i]) - int(b.data_as<uint8_t>()[i])) <= 1;
  }
  return double(close) / a.element_count();
}
double MaxAbs(const Tensor& a, const Tensor& b) {
  double worst = 0;
  for (int64_t i = 0; i < a.element_count(); ++i) {
    const double d = std::fabs(double(a.data_as<float>()[i]) - b.data_as<float>()[i]);
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

struct Outputs {
  Tensor planes, images, tensor_form;
};

Result<Outputs> RunAll(const Args& args, const std::string& backend, Precision precision,
                       const Inputs& in, CudaKernels kernels = CudaKernels::kAuto) {
  const std::string& model = args.model;
  LIPSYNC_ASSIGN_OR_RETURN(
      auto e, MakeEngine(model, backend, precision, std::max(in.faces.shape()[0], MaxBatch(args)),
                         kernels, false, !args.one_stream));
  const int64_t n = in.faces.shape()[0];
  const int s = e->frame_form().layout.inner_size;
  Outputs out{Tensor(DataType::kFloat32, {n, 3, s, s}), Tensor(DataType::kUInt8, {n, s, s, 3}),
              Tensor()};
  LIPSYNC_RETURN_IF_ERROR(
      e->RunFrames({in.faces.view(), in.audio.view()}, out.planes.mutable_view()));
  LIPSYNC_RETURN_IF_ERROR(
      e->RunFrames({in.faces.view(), in.audio.view()}, out.images.mutable_view()));
  LIPSYNC_ASSIGN_OR_RETURN(auto t, e->Run(ModelInputs(*e, in.visual.view(), in.audio.view())));
  out.tensor_form = std::move(t[0]);
  return out;
}

// Bytes of a [0,1] float output as OutputToImage makes them (OutputByte of each value).
Tensor ToBytes(const Tensor& planes) {
  Tensor bytes(DataType::kUInt8, planes.shape());
  for (int64_t i = 0; i < planes.element_count(); ++i) {
    bytes.data_as<uint8_t>()[i] = OutputByte(planes.data_as<float>()[i]);
  }
  return bytes;
}

class Checks {
 public:
  explicit Checks(Report& report) : report_(report) {}
  void Check(const std::string& what, double value, double bound, bool at_most) {
    const bool pass = at_most ? value <= bound : value >= bound;
    report_.Emit(
        {{"kind", "check"}, {"check", what}, {"value", value}, {"bound", bound}, {"pass", pass}});
    ok_ &= pass;
  }
  bool ok() const { return ok_; }

 private:
  Report& report_;
  bool ok_ = true;
};

// Against PyTorch on the frames bench/gpu_make_model.py saved (reference_*.npy in `dir`). Float16:
// no larger max abs difference from PyTorch float32 and no smaller share of bytes within 1 than
// PyTorch's own float16. Float32: this random-weight model magnifies float32 rounding on such
// frames (PyTorch's own float32 is about 3e-4 from float64 there), so the bound is twice PyTorch
// float32's distance from float64 rather than a fixed number.
Status AgainstPyTorch(const Args& args, Report& report, Checks& checks) {
  std::vector<Tensor> ref;
  for (const char* name : {"visual", "audio", "fp32", "fp16", "fp64"}) {
    LIPSYNC_ASSIGN_OR_RETURN(Tensor t, LoadNpy(args.reference + "/reference_" + name + ".npy"));
    ref.push_back(std::move(t));
  }
  const Tensor want_bytes = ToBytes(ref[2]);
  const double torch_max = MaxAbs(ref[3], ref[2]);
  const double torch_within = ShareWithinOne(ToBytes(ref[3]), want_bytes);
  const double torch_f32_error = MaxAbs(ref[2], ref[4]);
  report.Emit({{"kind", "accuracy"},
               {"impl", "pytorch eager"},
               {"precision", "fp32"},
               {"against", "pytorch eager fp64"},
               {"max_abs", torch_f32_error},
               {"uint8_within_1", ShareWithinOne(want_bytes, ToBytes(ref[4]))}});
  for (const Precision precision : {Precision::kFloat32, Precision::kFloat16}) {
    for (const CudaKernels k : {CudaKernels::kAuto, CudaKernels::kFused, CudaKernels::kUnfused}) {
      const CudaKernels kernels = Restricted(args, k);
      if (kernels != k) continue;
      LIPSYNC_ASSIGN_OR_RETURN(
          auto e, MakeEngine(args.model, "cuda", precision, std::max<int64_t>(8, MaxBatch(args)),
                             kernels, false, !args.one_stream));
      LIPSYNC_ASSIGN_OR_RETURN(auto got, e->Run(ModelInputs(*e, ref[0].view(), ref[1].view())));
      const bool half = precision == Precision::kFloat16;
      const std::string name = std::string("lipsync cuda ") + KernelsName(kernels);
      const Tensor& against = half ? ref[2] : ref[4];
      const double max_abs = MaxAbs(got[0], against);
      const double within = ShareWithinOne(ToBytes(got[0]), ToBytes(against));
      report.Emit({{"kind", "accuracy"},
                   {"impl", name},
                   {"precision", half ? "fp16" : "fp32"},
                   {"against", half ? "pytorch eager fp32" : "pytorch eager fp64"},
                   {"max_abs", max_abs},
                   {"uint8_within_1", within}});
      if (half) {
        const std::string label = name + " fp16 vs pytorch fp32";
        checks.Check(label + ", max abs (bound: pytorch fp16's)", max_abs, torch_max, true);
        checks.Check(label + ", uint8 within 1 (bound: pytorch fp16's)", within, torch_within,
                     false);
      } else {
        checks.Check(name + " fp32 vs pytorch fp64, max abs (bound: 2x pytorch fp32's)", max_abs,
                     2 * torch_f32_error, true);
      }
    }
  }
  return Status::Ok();
}

Status Accuracy(const Args& args, Report& report, Checks& checks) {
  EngineOptions probe;
  probe.backend = "ort";
  LIPSYNC_ASSIGN_OR_RETURN(auto cpu, Engine::Create(args.model, probe));
  const Inputs in = MakeInputs(*cpu, 4, 7);
  LIPSYNC_ASSIGN_OR_RETURN(Outputs ort, RunAll(args, "ort", Precision::kFloat32, in));
  const CudaKernels kernels = Restricted(args, CudaKernels::kAuto);
  LIPSYNC_ASSIGN_OR_RETURN(Outputs f32, RunAll(args, "cuda", Precision::kFloat32, in, kernels));
  LIPSYNC_ASSIGN_OR_RETURN(Outputs f16, RunAll(args, "cuda", Precision::kFloat16, in, kernels));
  // The GPU frame conversion must equal the CPU one it replaces.
  checks.Check("cuda fp32 frames vs cuda fp32 tensors, float max abs",
               MaxAbs(f32.planes, f32.tensor_form), 1e-6, true);
  checks.Check("cuda fp16 frames vs cuda fp16 tensors, float max abs",
               MaxAbs(f16.planes, f16.tensor_form), 1e-6, true);
  // Not 1e-4: on frames this model magnifies float32 rounding (see AgainstPyTorch).
  checks.Check("cuda fp32 frames vs ort cpu frames, float max abs", MaxAbs(f32.planes, ort.planes),
               5e-4, true);
  checks.Check("cuda fp32 frames vs ort cpu frames, uint8 within 1",
               ShareWithinOne(f32.images, ort.images), 0.999, false);
  report.Emit({{"kind", "accuracy"},
               {"impl", "lipsync cuda"},
               {"precision", "fp16"},
               {"against", "lipsync cuda fp32"},
               {"max_abs", MaxAbs(f16.planes, f32.planes)},
               {"uint8_within_1", ShareWithinOne(f16.images, f32.images)}});
  report.Emit({{"kind", "accuracy"},
               {"impl", "lipsync cuda"},
               {"precision", "fp32"},
               {"against", "onnxruntime cpu fp32"},
               {"max_abs", MaxAbs(f32.planes, ort.planes)},
               {"uint8_within_1", ShareWithinOne(f32.images, ort.images)}});
  if (!args.reference.empty()) return AgainstPyTorch(args, report, checks);
  return Status::Ok();
}

}  // namespace
}  // namespace lipsync

int main(int argc, char** argv) {
  lipsync::Args args;
  CLI::App app{"lipsync CUDA backend benchmark and checks"};
  app.add_option("--model", args.model, "ONNX model with the frame form")->required();
  app.add_option("--batch", args.batches, "batch sizes")->delimiter(',');
  app.add_option("--iterations", args.iterations);
  app.add_option("--warmup", args.warmup);
  app.add_option("--json", args.json, "also write the JSON lines here");
  app.add_option("--reference", args.reference,
                 "folder with the PyTorch reference (reference_*.npy) to check against");
  app.add_option("--cuda-kernels", args.cuda_kernels,
                 "auto: each configuration's own choice; unfused: no fused kernel anywhere (the "
                 "fallback when a fused kernel broke the device)")
      ->check(CLI::IsMember({"auto", "unfused"}));
  app.add_flag("--one-stream", args.one_stream,
               "no configuration runs the audio branch on a second stream");
  CLI11_PARSE(app, argc, argv);
  lipsync::Report report(args.json);
  lipsync::Checks checks(report);
  // The speed runs whatever the checks say, so that one run always gives every figure.
  const lipsync::Status accuracy = lipsync::Accuracy(args, report, checks);
  if (!accuracy.ok()) std::fprintf(stderr, "error: %s\n", accuracy.ToString().c_str());
  const lipsync::Status speed = lipsync::Speed(args, report);
  if (!speed.ok()) std::fprintf(stderr, "error: %s\n", speed.ToString().c_str());
  if (!checks.ok()) std::fprintf(stderr, "error: a check failed (see the check lines)\n");
  return accuracy.ok() && speed.ok() && checks.ok() ? 0 : 2;
}
