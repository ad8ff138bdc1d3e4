// The CUDA backend's working memory on a GPU (label gpu): engines on one device borrow the
// device pool's arenas (lipsync/memory.h) instead of each holding its own, and a run past the
// pool's limit is RESOURCE_EXHAUSTED while a smaller one still runs. The demo model; DEMO_MODEL
// overrides it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include "demo_model.h"
#include "lipsync/engine.h"
#include "lipsync/memory.h"

namespace lipsync {
namespace {

std::unique_ptr<Engine> Make() {
  EngineOptions o;
  o.backend = "cuda";
  o.max_batch = 8;
  auto e = Engine::Create(test_plans::DemoModel(), o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(*e) : nullptr;
}

Status RunBatch(Engine& e, int64_t n) {
  std::vector<Tensor> inputs;
  std::vector<TensorView> views;
  for (const TensorInfo& t : e.info().inputs) {
    Shape shape = t.shape;
    shape[0] = n;
    inputs.emplace_back(DataType::kFloat32, shape);
    views.push_back(inputs.back().view());
  }
  auto out = e.Run(views);
  return out.ok() ? Status::Ok() : out.status();
}

DeviceMemoryStats Pool() {
  for (const DeviceMemoryStats& s : DeviceMemoryPools()) {
    if (s.device == 0) return s;
  }
  return {};
}

TEST(CudaDeviceMemory, TwoEnginesOnOneDeviceHoldOneSetOfArenas) {
  auto a = Make();
  auto b = Make();
  ASSERT_TRUE(a && b);
  TrimDeviceMemory(0, 0);
  ASSERT_TRUE(RunBatch(*a, 4).ok());
  const int64_t one = Pool().cached;
  EXPECT_GT(one, 0);
  EXPECT_EQ(Pool().working_in_use, 0);
  ASSERT_TRUE(RunBatch(*b, 4).ok());
  EXPECT_EQ(Pool().cached, one) << "the second engine allocated arenas of its own";
  EXPECT_EQ(a->memory().device_weights, b->memory().device_weights);

  // At once, the two take two slots: two arenas, never more.
  std::thread other([&] {
    for (int i = 0; i < 8; ++i) EXPECT_TRUE(RunBatch(*b, 4).ok());
  });
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(RunBatch(*a, 4).ok());
  other.join();
  EXPECT_LE(Pool().cached, 2 * one);
  EXPECT_EQ(Pool().working_in_use, 0);
}

TEST(CudaDeviceMemory, ARunPastTheLimitIsRefusedAndASmallerOneRuns) {
  auto e = Make();
  ASSERT_TRUE(e);
  TrimDeviceMemory(0, 0);
  ASSERT_TRUE(RunBatch(*e, 2).ok());
  const int64_t small = Pool().cached;
  SetDeviceMemoryLimit(0, small);
  const Status refused = RunBatch(*e, 8);
  EXPECT_EQ(refused.code(), StatusCode::kResourceExhausted) << refused.ToString();
  EXPECT_TRUE(RunBatch(*e, 2).ok());
  SetDeviceMemoryLimit(0, 0);
  EXPECT_TRUE(RunBatch(*e, 8).ok());
}

}  // namespace
}  // namespace lipsync
