// The device scheduler on the tiny test UNets: overlapping runs of two models, live frames first,
// cancelled and late frames dropped, a failed run failing only its jobs, and a fixed-batch model's
// padded batches giving the frames of a run of their own.
#include "runtime/scheduler.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <random>

#include "server/core/avatar_registry.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using testing::kTestData;

struct Model {
  std::unique_ptr<LoadedAvatar> avatar;
  std::shared_ptr<runtime::ScheduledModel> scheduled;
};

Model Add(runtime::Scheduler& scheduler, const std::string& file, const std::string& name,
          std::chrono::microseconds max_delay = {}) {
  Model m;
  m.avatar = std::make_unique<LoadedAvatar>();
  EngineOptions options;
  options.intra_op_threads = 1;
  options.max_batch = 16;
  auto unet = Engine::Create(kTestData + "/" + file, options);
  EXPECT_TRUE(unet.ok()) << unet.status().ToString();
  m.avatar->id = name;
  m.avatar->unet = std::move(*unet);
  m.avatar->roles = FindUnetInputs(m.avatar->unet->info()).value();
  m.avatar->layout = FaceLayout::ForInputSize(m.avatar->roles.size).value();
  runtime::ModelConfig config;
  config.name = name;
  config.max_batch = 16;
  config.max_delay = max_delay;
  config.layout = m.avatar->layout;
  config.visual_input = static_cast<int>(m.avatar->roles.visual);
  config.audio_input = static_cast<int>(m.avatar->roles.audio);
  m.scheduled = scheduler.AddModel(m.avatar->unet.get(), config);
  return m;
}

// Random faces and windows for `n` frames, and room for their output.
struct Frames {
  Tensor faces, audio, out;
  Frames(int64_t n, int s, uint32_t seed)
      : faces(DataType::kUInt8, {n, s, s, 3}),
        audio(DataType::kFloat32, {n, 32, 16, 16}),
        out(DataType::kUInt8, {n, s, s, 3}) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> byte(0, 255);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int64_t i = 0; i < faces.element_count(); ++i) {
      faces.data_as<uint8_t>()[i] = static_cast<uint8_t>(byte(rng));
    }
    for (int64_t i = 0; i < audio.element_count(); ++i) audio.data_as<float>()[i] = normal(rng);
  }
  runtime::Job MakeJob(runtime::Origin origin,
                       runtime::Priority priority = runtime::Priority::kOffline) {
    runtime::Job job;
    job.visual = faces.view();
    job.audio = audio.view();
    job.output = out.mutable_view();
    job.origin = origin;
    job.priority = priority;
    return job;
  }
};

// Waits for `done` and returns its status.
struct Done {
  std::promise<Status> promise;
  std::future<Status> future = promise.get_future();
  std::function<void(const Status&)> callback() {
    return [this](const Status& s) { promise.set_value(s); };
  }
};

// Holds each batch in the scheduler's observer until `want` batches are in flight at once (or a
// minute passes): `most` is the most there were.
struct Overlap {
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0, most = 0;
  void Watch(runtime::Scheduler& scheduler, int want) {
    scheduler.SetBatchObserver([this, want](const runtime::BatchRecord&) {
      std::unique_lock lock(mu);
      most = std::max(most, ++inside);
      cv.notify_all();
      cv.wait_for(lock, std::chrono::seconds(60), [&] { return most >= want; });
      --inside;
    });
  }
};

// A backend that overlaps two runs: the batches of two models are in flight at once. Each batch
// waits in the observer until the other one is there too (or a minute passes: then it fails).
TEST(Scheduler, TwoModelsRunAtOnceWhereTheBackendOverlapsTwoRuns) {
  runtime::SchedulerOptions options;
  options.concurrency = 2;
  runtime::Scheduler scheduler(options);
  Model a = Add(scheduler, "tiny.onnx", "a"), b = Add(scheduler, "tiny.onnx", "b");
  Overlap overlap;
  overlap.Watch(scheduler, 2);
  const int s = a.avatar->layout.inner_size;
  Frames fa(2, s, 1), fb(2, s, 2);
  Done da, db;
  runtime::Job ja = fa.MakeJob(runtime::Origin::kTest), jb = fb.MakeJob(runtime::Origin::kTest);
  ja.done = da.callback();
  jb.done = db.callback();
  ASSERT_TRUE(scheduler.Submit(a.scheduled, std::move(ja)).ok());
  ASSERT_TRUE(scheduler.Submit(b.scheduled, std::move(jb)).ok());
  EXPECT_TRUE(da.future.get().ok());
  EXPECT_TRUE(db.future.get().ok());
  EXPECT_EQ(overlap.most, 2);
  EXPECT_EQ(scheduler.totals().batches, 2);
}

// A model loaded as two copies (as render loads its UNet on the CPU) runs a batch on each at once
// (each batch waits in the observer until the other is there too), and no more even where it
// asks for more runs.
TEST(Scheduler, ModelCopiesRunOneBatchEach) {
  runtime::Scheduler scheduler(runtime::SchedulerOptions{});
  Model a = Add(scheduler, "tiny.onnx", "a");
  EngineOptions options;
  options.intra_op_threads = 1;
  options.max_batch = 16;
  auto second = Engine::Create(kTestData + "/tiny.onnx", options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  runtime::ModelConfig config = a.scheduled->config();
  config.max_runs = 3;
  config.max_batch = 2;  // a job per batch
  auto copies = scheduler.AddModel({a.avatar->unet.get(), second->get()}, config);
  EXPECT_EQ(copies->max_runs(), 2);
  EXPECT_EQ(scheduler.concurrency(), 2);
  Overlap overlap;
  overlap.Watch(scheduler, 2);
  const int s = a.avatar->layout.inner_size;
  std::vector<std::unique_ptr<Frames>> frames;
  std::vector<std::unique_ptr<Done>> done;
  for (uint32_t i = 0; i < 3; ++i) {
    frames.push_back(std::make_unique<Frames>(2, s, i));
    done.push_back(std::make_unique<Done>());
    runtime::Job job = frames.back()->MakeJob(runtime::Origin::kRender);
    job.done = done.back()->callback();
    ASSERT_TRUE(scheduler.Submit(copies, std::move(job)).ok());
  }
  for (auto& d : done) EXPECT_TRUE(d->future.get().ok());
  EXPECT_EQ(overlap.most, 2);
  EXPECT_EQ(scheduler.totals().batches, 3);
  EXPECT_EQ(scheduler.totals().rows_by_origin[static_cast<size_t>(runtime::Origin::kRender)], 6);
}

// On the CPU the backend overlaps nothing: one batch at a time.
TEST(Scheduler, TheCpuRunsOneBatchAtATime) {
  runtime::Scheduler scheduler(runtime::SchedulerOptions{});
  Model a = Add(scheduler, "tiny.onnx", "a");
  EXPECT_EQ(scheduler.concurrency(), a.avatar->unet->capabilities().overlapping_runs);
  EXPECT_EQ(scheduler.concurrency(), 1);
}

// A frame waiting for company runs at once when the scheduler stops waiting (a draining server),
// long before its ten minutes are up.
TEST(Scheduler, AFrameWaitingForCompanyRunsOnceWaitingStops) {
  runtime::Scheduler scheduler(runtime::SchedulerOptions{});
  Model a = Add(scheduler, "tiny.onnx", "a", std::chrono::minutes(10));
  Frames lone(1, a.avatar->layout.inner_size, 7);
  Done done;
  runtime::Job j = lone.MakeJob(runtime::Origin::kMonolithic);
  j.done = done.callback();
  ASSERT_TRUE(scheduler.Submit(a.scheduled, std::move(j)).ok());
  EXPECT_EQ(scheduler.queued_rows(), 1);
  scheduler.StopWaiting();
  ASSERT_EQ(done.future.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(done.future.get().ok());
}

// Queued together, live frames run before offline ones; cancelled and late jobs are answered
// without running.
TEST(Scheduler, LiveFirstAndGivenUpJobsAreDropped) {
  runtime::Scheduler scheduler(runtime::SchedulerOptions{});
  Model a = Add(scheduler, "tiny.onnx", "a"), b = Add(scheduler, "tiny.onnx", "b");
  std::vector<runtime::BatchRecord> seen;
  scheduler.SetBatchObserver([&](const runtime::BatchRecord& r) { seen.push_back(r); });
  const int s = a.avatar->layout.inner_size;
  scheduler.Pause();
  Frames offline(3, s, 3), live(2, s, 4), cancelled(1, s, 5), late(1, s, 6);
  Done d_offline, d_live, d_cancelled, d_late;
  runtime::Job j = offline.MakeJob(runtime::Origin::kMonolithic);
  j.done = d_offline.callback();
  ASSERT_TRUE(scheduler.Submit(a.scheduled, std::move(j)).ok());
  j = live.MakeJob(runtime::Origin::kSession, runtime::Priority::kLive);
  j.done = d_live.callback();
  ASSERT_TRUE(scheduler.Submit(b.scheduled, std::move(j)).ok());
  std::atomic<bool> flag{true};
  j = cancelled.MakeJob(runtime::Origin::kLipSyncSrv);
  j.cancelled = &flag;
  j.done = d_cancelled.callback();
  ASSERT_TRUE(scheduler.Submit(a.scheduled, std::move(j)).ok());
  j = late.MakeJob(runtime::Origin::kLipSyncSrv);
  j.deadline = runtime::SchedulerClock::now() - std::chrono::seconds(1);
  j.done = d_late.callback();
  ASSERT_TRUE(scheduler.Submit(b.scheduled, std::move(j)).ok());
  EXPECT_EQ(scheduler.queued_rows(runtime::Origin::kLipSyncSrv), 2);
  scheduler.Resume();
  EXPECT_TRUE(d_live.future.get().ok());
  EXPECT_TRUE(d_offline.future.get().ok());
  EXPECT_EQ(d_cancelled.future.get().code(), StatusCode::kCancelled);
  EXPECT_EQ(d_late.future.get().code(), StatusCode::kDeadlineExceeded);
  ASSERT_EQ(seen.size(), 2u);  // the given-up jobs never ran
  EXPECT_EQ(seen[0].live, 2);
  EXPECT_EQ(seen[0].by_origin[static_cast<size_t>(runtime::Origin::kSession)], 2);
  EXPECT_EQ(seen[1].by_origin[static_cast<size_t>(runtime::Origin::kMonolithic)], 3);
}

// Jobs of one model share a batch; a fixed-batch model's batch is padded; every job gets the
// faces a run of its own gives.
TEST(Scheduler, SharedAndPaddedBatchesGiveEachJobItsOwnFrames) {
  for (const char* file : {"tiny.onnx", "tiny_fixed3.onnx"}) {
    SCOPED_TRACE(file);
    runtime::Scheduler scheduler(runtime::SchedulerOptions{});
    Model m = Add(scheduler, file, "m");
    const int s = m.avatar->layout.inner_size;
    std::vector<runtime::BatchRecord> seen;
    scheduler.SetBatchObserver([&](const runtime::BatchRecord& r) { seen.push_back(r); });
    Frames one(1, s, 7), two(1, s, 8);
    // Alone first, for the reference.
    ASSERT_TRUE(scheduler.Run(m.scheduled, one.MakeJob(runtime::Origin::kTest)).ok());
    ASSERT_TRUE(scheduler.Run(m.scheduled, two.MakeJob(runtime::Origin::kTest)).ok());
    const auto bytes = [](const Tensor& t) {
      return std::vector<uint8_t>(t.data_as<uint8_t>(), t.data_as<uint8_t>() + t.byte_size());
    };
    const std::vector<uint8_t> want_one = bytes(one.out), want_two = bytes(two.out);
    seen.clear();
    scheduler.Pause();
    Done d1, d2;
    runtime::Job j1 = one.MakeJob(runtime::Origin::kMonolithic),
                 j2 = two.MakeJob(runtime::Origin::kLipSyncSrv);
    j1.done = d1.callback();
    j2.done = d2.callback();
    std::memset(one.out.data(), 0, one.out.byte_size());
    std::memset(two.out.data(), 0, two.out.byte_size());
    ASSERT_TRUE(scheduler.Submit(m.scheduled, std::move(j1)).ok());
    ASSERT_TRUE(scheduler.Submit(m.scheduled, std::move(j2)).ok());
    scheduler.Resume();
    ASSERT_TRUE(d1.future.get().ok());
    ASSERT_TRUE(d2.future.get().ok());
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].rows, 2);
    EXPECT_EQ(seen[0].padded, m.scheduled->fixed_batch() ? 3 : 2);
    EXPECT_EQ(bytes(one.out), want_one);
    EXPECT_EQ(bytes(two.out), want_two);
  }
}

// A run that fails (an allocation refused) fails its jobs; the next run succeeds.
TEST(Scheduler, AFailedRunFailsOnlyItsJobs) {
  runtime::Scheduler scheduler(runtime::SchedulerOptions{});
  Model m = Add(scheduler, "tiny.onnx", "m");
  const int s = m.avatar->layout.inner_size;
  Frames f(2, s, 9);
  HostMemory().FailNextAllocations(1);
  const Status failed = scheduler.Run(m.scheduled, f.MakeJob(runtime::Origin::kTest));
  HostMemory().FailNextAllocations(0);
  EXPECT_EQ(failed.code(), StatusCode::kResourceExhausted) << failed.ToString();
  EXPECT_TRUE(scheduler.Run(m.scheduled, f.MakeJob(runtime::Origin::kTest)).ok());
  EXPECT_EQ(scheduler.totals().failed_batches, 1);
}

}  // namespace
}  // namespace lipsync::server
