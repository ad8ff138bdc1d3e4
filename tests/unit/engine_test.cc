// Engine behaviour on the ONNX Runtime backend: validation errors, bad files, threading.
#include "lipsync/engine.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/platform.h"

namespace lipsync {
namespace {

const std::string kDir = LIPSYNC_TEST_DATA_DIR;

EngineOptions CpuOptions() {
  EngineOptions o;
  o.intra_op_threads = 1;
  o.max_batch = 8;
  return o;
}

std::unique_ptr<Engine> Load(const std::string& name, EngineOptions o = CpuOptions()) {
  auto engine = Engine::Create(kDir + "/" + name, o);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  return engine.ok() ? std::move(*engine) : nullptr;
}

std::vector<Tensor> RandomInputs(int64_t batch, uint32_t seed, int size = 320) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<Tensor> t;
  t.emplace_back(DataType::kFloat32, Shape{batch, 6, size, size});
  t.emplace_back(DataType::kFloat32, Shape{batch, 32, 16, 16});
  for (auto& x : t)
    for (int64_t i = 0; i < x.element_count(); ++i) x.data_as<float>()[i] = u(rng);
  return t;
}

std::vector<TensorView> Views(const std::vector<Tensor>& t) { return {t[0].view(), t[1].view()}; }

TEST(Engine, ReportsModelInfo) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  const ModelInfo& info = e->info();
  ASSERT_EQ(info.inputs.size(), 2u);
  EXPECT_EQ(info.inputs[0].name, "visual_input");
  EXPECT_EQ(info.inputs[0].shape, (Shape{-1, 6, 320, 320}));
  EXPECT_EQ(info.outputs[0].name, "output");
  EXPECT_EQ(info.opset, 17);
  EXPECT_TRUE(info.dynamic_batch);
  EXPECT_EQ(info.max_batch, 8);
  EXPECT_EQ(info.backend, "ort");
  EXPECT_EQ(info.provider, "cpu");
  EXPECT_EQ(*e->InputIndex("audio_input"), 1u);
  EXPECT_EQ(e->InputIndex("nope").status().code(), StatusCode::kNotFound);
}

TEST(Engine, BatchItemsAreIndependentAndInSigmoidRange) {
  // tiny.onnx ends in a sigmoid, so every output lies in (0, 1).
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  auto in = RandomInputs(2, 7);
  auto out = e->Run(Views(in));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ((*out)[0].shape(), (Shape{2, 3, 320, 320}));
  for (int64_t i = 0; i < (*out)[0].element_count(); ++i) {
    const float v = (*out)[0].data_as<float>()[i];
    ASSERT_TRUE(v > 0.0f && v < 1.0f) << i;
  }
  // Batch items are independent: item 1 alone gives the same answer as inside the batch.
  std::vector<Tensor> one;
  one.emplace_back(DataType::kFloat32, Shape{1, 6, 320, 320});
  one.emplace_back(DataType::kFloat32, Shape{1, 32, 16, 16});
  std::memcpy(one[0].data(), in[0].data_as<float>() + 6 * 320 * 320, one[0].byte_size());
  std::memcpy(one[1].data(), in[1].data_as<float>() + 32 * 16 * 16, one[1].byte_size());
  auto single = e->Run(Views(one));
  ASSERT_TRUE(single.ok());
  const float* a = (*out)[0].data_as<float>() + 3 * 320 * 320;
  const float* b = (*single)[0].data_as<float>();
  for (int i = 0; i < 3 * 320 * 320; ++i) ASSERT_NEAR(a[i], b[i], 1e-6f);
}

TEST(Engine, WithoutTheMemoryPatternTheOutputsAreTheSame) {
  auto planned = Load("tiny.onnx");
  EngineOptions o = CpuOptions();
  o.ort.memory_pattern = false;
  auto unplanned = Load("tiny.onnx", o);
  ASSERT_TRUE(planned && unplanned);
  for (int64_t batch : {1, 3, 2}) {  // a new shape, then one seen before
    auto in = RandomInputs(batch, 40 + static_cast<uint32_t>(batch));
    auto a = planned->Run(Views(in));
    auto b = unplanned->Run(Views(in));
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ((*a)[0].byte_size(), (*b)[0].byte_size());
    EXPECT_EQ(std::memcmp((*a)[0].data(), (*b)[0].data(), (*a)[0].byte_size()), 0) << batch;
  }
}

TEST(Engine, OptionsPerRunShareTheThreadsAndDropTheMemoryPatternOnTheCpu) {
  EngineOptions o;
  o.intra_op_threads = 4;
  const EngineOptions one = OptionsPerRun(o, 1);
  EXPECT_EQ(one.intra_op_threads, 4);
  EXPECT_TRUE(one.ort.memory_pattern);
  const EngineOptions two = OptionsPerRun(o, 2);
  EXPECT_EQ(two.intra_op_threads, 2);
  EXPECT_FALSE(two.ort.memory_pattern);
  EXPECT_EQ(OptionsPerRun(o, 8).intra_op_threads, 1);  // at least one each
  o.intra_op_threads = 0;
  EXPECT_EQ(OptionsPerRun(o, 2).intra_op_threads, 0);  // the backend's default stays
  o.provider = "cuda";
  EXPECT_TRUE(OptionsPerRun(o, 2).ort.memory_pattern);  // a GPU provider keeps its pattern
}

TEST(Engine, WrongShapeNamesTensorAndShapes) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  Tensor visual(DataType::kFloat32, {1, 6, 320, 320});
  Tensor audio(DataType::kFloat32, {1, 32, 16});
  auto r = e->Run({visual.view(), audio.view()});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "input 'audio_input': expected shape [N,32,16,16], got [1,32,16]");
}

TEST(Engine, WrongTypeCountAndBatch) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  Tensor visual(DataType::kFloat32, {2, 6, 320, 320});
  Tensor audio16(DataType::kFloat16, {2, 32, 16, 16});
  auto r = e->Run({visual.view(), audio16.view()});
  EXPECT_EQ(r.status().message(), "input 'audio_input': expected float32, got float16");

  EXPECT_EQ(e->Run({visual.view()}).status().message(), "expected 2 inputs, got 1");

  Tensor audio3(DataType::kFloat32, {3, 32, 16, 16});
  r = e->Run({visual.view(), audio3.view()});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("batch 3 differs"), std::string::npos);

  Tensor big_v(DataType::kFloat32, {9, 6, 320, 320}), big_a(DataType::kFloat32, {9, 32, 16, 16});
  r = e->Run({big_v.view(), big_a.view()});
  EXPECT_EQ(r.status().message(), "batch 9 exceeds the maximum of 8");
}

TEST(Engine, FixedBatchModelRejectsOtherBatches) {
  auto e = Load("tiny_fixed.onnx");
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->info().dynamic_batch);
  EXPECT_EQ(e->info().max_batch, 1);
  EXPECT_EQ(e->info().inputs[0].name, "input");
  auto ok = e->Run(Views(RandomInputs(1, 1)));
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  auto r = e->Run(Views(RandomInputs(2, 1)));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input 'input': expected shape [1,6,320,320], got [2,6,320,320]");
}

TEST(Engine, OutputBufferMismatchIsRejected) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  auto in = RandomInputs(1, 3);
  Tensor wrong(DataType::kFloat32, {1, 3, 320, 319});
  Status s = e->Run(Views(in), {wrong.mutable_view()});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("output buffer 'output'"), std::string::npos);
}

TEST(Engine, NonFiniteInputsRejectedWhenAsked) {
  EngineOptions o = CpuOptions();
  o.check_finite = true;
  auto e = Load("tiny.onnx", o);
  ASSERT_TRUE(e);
  auto in = RandomInputs(1, 3);
  in[1].data_as<float>()[17] = std::nanf("");
  auto r = e->Run(Views(in));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "input 'audio_input': element 17 is NaN; inputs must be finite");
}

TEST(Engine, MissingCorruptAndTruncatedFiles) {
  auto missing = Engine::Create(kDir + "/does_not_exist.onnx", CpuOptions());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("does_not_exist.onnx"), std::string::npos);

  const std::string garbage = kDir + "/garbage.onnx";
  std::ofstream(garbage) << "definitely not a protobuf \xff\xff\xff";
  auto g = Engine::Create(garbage, CpuOptions());
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("garbage.onnx"), std::string::npos) << g.status().message();

  const std::string truncated = kDir + "/truncated.onnx";
  // Removed first: MinGW's copy_file refuses to overwrite on Windows despite overwrite_existing.
  std::filesystem::remove(truncated);
  std::filesystem::copy_file(kDir + "/tiny.onnx", truncated);
  std::filesystem::resize_file(truncated, std::filesystem::file_size(truncated) / 2);
  auto t = Engine::Create(truncated, CpuOptions());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(t.status().message().find("truncated.onnx"), std::string::npos) << t.status().message();

  const std::string empty = kDir + "/empty.onnx";
  std::ofstream(empty).close();
  EXPECT_EQ(Engine::Create(empty, CpuOptions()).status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(Engine::Create(kDir, CpuOptions()).status().code(), StatusCode::kInvalidArgument);
}

TEST(Engine, UnknownProviderBackendAndBadOptions) {
  EngineOptions o = CpuOptions();
  o.provider = "quantum";
  auto r = Engine::Create(kDir + "/tiny.onnx", o);
  EXPECT_EQ(r.status().message(), "unknown provider 'quantum' (use cpu, cuda, tensorrt or dml)");
  o = CpuOptions();
  o.backend = "magic";
  r = Engine::Create(kDir + "/tiny.onnx", o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("unknown backend 'magic'"), std::string::npos);
  o = CpuOptions();
  o.max_batch = 0;
  EXPECT_EQ(Engine::Create(kDir + "/tiny.onnx", o).status().code(), StatusCode::kInvalidArgument);
}

TEST(Engine, MissingGpuProviderSaysWhichLibraryOrFallsBack) {
  EngineOptions o = CpuOptions();
  o.provider = "cuda";
  auto r = Engine::Create(kDir + "/tiny.onnx", o);
  if (r.ok()) GTEST_SKIP() << "this machine has a working CUDA provider";
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(platform::SharedLibraryName("onnxruntime_providers_cuda")),
            std::string::npos);
  o.ort.allow_cpu_fallback = true;
  auto fallback = Engine::Create(kDir + "/tiny.onnx", o);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  EXPECT_EQ((*fallback)->info().provider, "cpu");
  EXPECT_FALSE((*fallback)->info().fallback_reason.empty());
}

// DirectML needs a DirectX 12 device: none on Linux, none under Wine (the Windows build's tests).
TEST(Engine, DirectMLWithoutADeviceSaysSoOrFallsBack) {
  EngineOptions o = CpuOptions();
  o.provider = "dml";
  auto r = Engine::Create(kDir + "/tiny.onnx", o);
  if (r.ok()) GTEST_SKIP() << "this machine has a DirectX 12 device";
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("DirectX 12"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("--allow-cpu-fallback"), std::string::npos);
  o.ort.allow_cpu_fallback = true;
  auto fallback = Engine::Create(kDir + "/tiny.onnx", o);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  EXPECT_EQ((*fallback)->info().provider, "cpu");
  EXPECT_NE((*fallback)->info().fallback_reason.find("DirectX 12"), std::string::npos);
}

TEST(Engine, ConcurrentRunsMatchSingleThreadedResults) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  constexpr int kThreads = 4, kRounds = 5;
  std::vector<std::vector<Tensor>> inputs;
  std::vector<std::vector<float>> expected;
  for (int t = 0; t < kThreads; ++t) {
    inputs.push_back(RandomInputs(1 + t % 3, 100 + t));
    auto out = e->Run(Views(inputs.back()));
    ASSERT_TRUE(out.ok());
    const float* p = (*out)[0].data_as<float>();
    expected.emplace_back(p, p + (*out)[0].element_count());
  }
  std::vector<int> mismatches(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        auto out = e->Run(Views(inputs[t]));
        if (!out.ok() ||
            std::memcmp((*out)[0].data(), expected[t].data(), expected[t].size() * 4) != 0) {
          ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST(Engine, CpuBackendCapabilities) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  const BackendCapabilities& caps = e->capabilities();
  EXPECT_TRUE(caps.Accepts(MemoryType::kHost));
  EXPECT_TRUE(caps.Accepts(MemoryType::kPinnedHost));
  EXPECT_FALSE(caps.Accepts(MemoryType::kDevice));
  EXPECT_EQ(caps.device_id, -1);
  EXPECT_FALSE(caps.frames_on_device);
  EXPECT_EQ(caps.overlapping_runs, 1);
}

TEST(Engine, DeviceMemoryOnACpuBackendIsAClearError) {
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  auto in = RandomInputs(1, 3);
  std::vector<TensorView> views = Views(in);
  views[0].memory = MemoryType::kDevice;
  auto r = e->Run(views);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(),
            "input 'visual_input' is in device memory, which the 'ort' backend (provider 'cpu') "
            "cannot read (it takes: host, pinned host)");

  Tensor out(DataType::kFloat32, {1, 3, 320, 320});
  MutableTensorView out_view = out.mutable_view();
  out_view.memory = MemoryType::kDevice;
  const Status s = e->Run(Views(in), {out_view});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("output buffer 'output' is in device memory"), std::string::npos)
      << s.message();
}

TEST(Engine, PinnedHostViewsRunLikeHostViews) {
  // The CPU backends read pinned host memory as any host memory: same results.
  auto e = Load("tiny.onnx");
  ASSERT_TRUE(e);
  auto in = RandomInputs(2, 21);
  auto expected = e->Run(Views(in));
  ASSERT_TRUE(expected.ok());
  std::vector<TensorView> pinned = Views(in);
  for (auto& v : pinned) v.memory = MemoryType::kPinnedHost;
  auto got = e->Run(pinned);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(std::memcmp((*got)[0].data(), (*expected)[0].data(), (*got)[0].byte_size()), 0);
}

TEST(Engine, BackendOptionsBelongToTheirBackend) {
  // Options of another backend are ignored; the ort backend checks its own.
  EngineOptions o = CpuOptions();
  o.cuda.max_contexts = 0;  // not the ort backend's concern
  EXPECT_TRUE(Engine::Create(kDir + "/tiny.onnx", o).ok());
  o = CpuOptions();
  o.ort.inter_op_threads = -1;
  auto r = Engine::Create(kDir + "/tiny.onnx", o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync
