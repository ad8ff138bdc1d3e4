// Dynamic batching, overload, deadlines, cancellation and shutdown.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>

#include "server/core/batch_tuning.h"
#include "server_test_util.h"

namespace lipsync::server::testing {
namespace {

using Clock = std::chrono::steady_clock;

TEST(ServerBatching, ConcurrentRequestsRunTogetherWithinMaxBatch) {
  // A long queue delay gives the requests time to meet; max batch 4 caps the batches.
  auto s = StartServer(Options(4, 300000));
  ASSERT_TRUE(s);
  constexpr int kClients = 8;
  std::vector<Frames> frames;
  for (int i = 0; i < kClients; ++i) frames.push_back(MakeFrames(1, 200 + i));
  std::vector<std::future<std::pair<grpc::Status, lipsync::v1::InferResponse>>> calls;
  for (int i = 0; i < kClients; ++i) {
    calls.push_back(std::async(std::launch::async, [&, i] {
      lipsync::v1::InferResponse r;
      auto st = CallInfer(*s, frames[i].request, &r);
      return std::make_pair(st, r);
    }));
  }
  for (int i = 0; i < kClients; ++i) {
    auto [status, response] = calls[i].get();
    ASSERT_TRUE(status.ok()) << status.error_message();
    // Grouped with other frames, not alone: equal to the engine within 1e-5.
    EXPECT_LE(
        MaxAbsDiff(response.output().data(), EngineOutput(*s->engine, frames[i].engine_inputs)),
        1e-5);
  }
  Metrics& m = s->server->metrics();
  EXPECT_EQ(m.frames(), static_cast<uint64_t>(kClients));
  EXPECT_GE(m.batches_of_size(4), 1u) << m.RenderPrometheus();
  EXPECT_LT(m.batches(), static_cast<uint64_t>(kClients));
  for (int size = 5; size <= 64; ++size) EXPECT_EQ(m.batches_of_size(size), 0u) << size;
  EXPECT_NE(m.RenderPrometheus().find("lipsync_batch_size_bucket{le=\"4\"}"), std::string::npos);
}

// A request of more frames than the preferred batch is split over several batches and put back
// together in order.
TEST(ServerBatching, RequestLargerThanThePreferredBatchIsSplitAndReassembled) {
  ServerOptions o = Options(8, 1000);
  o.batching.preferred_batch = 2;
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  Frames f = MakeFrames(5, 77);
  lipsync::v1::InferResponse r;
  ASSERT_TRUE(CallInfer(*s, f.request, &r).ok());
  EXPECT_LE(MaxAbsDiff(r.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 1e-5);
  Metrics& m = s->server->metrics();
  EXPECT_EQ(m.frames(), 5u);
  EXPECT_EQ(m.batches_of_size(2), 2u) << m.RenderPrometheus();
  EXPECT_EQ(m.batches_of_size(1), 1u);
  EXPECT_NE(m.RenderPrometheus().find("\nlipsync_preferred_batch 2\n"), std::string::npos);
}

// With the preferred batch left to the server, Start times the engine and picks one of the sizes
// it tried; the batcher and the metrics use that choice.
TEST(ServerBatching, AutoPreferredBatchIsChosenAtStart) {
  ServerOptions o = Options(4, 1000);
  o.batching.preferred_batch = BatcherOptions::kAutoPreferredBatch;
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  const int chosen = s->server->preferred_batch();
  EXPECT_TRUE(chosen == 1 || chosen == 2 || chosen == 4) << chosen;
  EXPECT_NE(s->server->metrics().RenderPrometheus().find("\nlipsync_preferred_batch " +
                                                         std::to_string(chosen) + "\n"),
            std::string::npos);
}

// A lone frame waits the queue delay for company, then runs: its queue time is the delay, give
// or take the scheduler's wake-up, and well under twice the delay.
TEST(ServerBatching, LoneRequestWaitsAtMostTheQueueDelay) {
  constexpr double kDelayMs = 3000;
  auto s = StartServer(Options(8, static_cast<int>(kDelayMs * 1000)));
  ASSERT_TRUE(s);
  Frames f = MakeFrames(1, 1);
  lipsync::v1::InferResponse r;
  ASSERT_TRUE(CallInfer(*s, f.request, &r).ok());
  EXPECT_GE(r.queue_ms(), kDelayMs - 1);     // it did wait for company...
  EXPECT_LE(r.queue_ms(), kDelayMs + 2500);  // ...but not twice as long
  EXPECT_EQ(s->server->metrics().batches_of_size(1), 1u);
}

// With six frames waiting in a queue of eight (a long queue delay keeps them there), three more
// are refused at once, while the six still wait; two more fill the batch, which then runs.
TEST(ServerBatching, FullQueueRefusesAtOnceAndAnswersWhatItAccepted) {
  auto s = StartServer(Options(8, 600000000, 8));  // frames wait up to 10 min for a full batch
  ASSERT_TRUE(s);
  const Metrics& m = s->server->metrics();
  Frames six = MakeFrames(6, 1);
  auto first = std::async(std::launch::async, [&] {
    lipsync::v1::InferResponse r;
    return CallInfer(*s, six.request, &r, 120000);
  });
  ASSERT_TRUE(WaitFor([&] { return m.queue_depth() == 6; }));
  Frames three = MakeFrames(3, 2);
  lipsync::v1::InferResponse r;
  auto refused = CallInfer(*s, three.request, &r);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("queue is full"), std::string::npos);
  EXPECT_EQ(first.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the refusal waited for the accepted frames";
  EXPECT_EQ(m.queue_depth(), 6);
  Frames two = MakeFrames(2, 3);
  EXPECT_TRUE(CallInfer(*s, two.request, &r, 60000).ok());
  EXPECT_TRUE(first.get().ok());  // the accepted request is still answered
  EXPECT_EQ(m.requests("Infer", "RESOURCE_EXHAUSTED"), 1u);
  EXPECT_EQ(m.batches_of_size(8), 1u);
}

// A frame whose deadline passed while it waited for company (2 s deadline, 5 s queue delay) is
// dropped when its batch forms, before the engine runs.
TEST(ServerBatching, ExpiredWorkNeverReachesTheModel) {
  auto s = StartServer(Options(8, 5000000));
  ASSERT_TRUE(s);
  const Metrics& m = s->server->metrics();
  auto expired = std::async(std::launch::async, [&] {
    lipsync::v1::InferResponse r;
    return CallInfer(*s, MakeFrames(1, 1).request, &r, /*timeout_ms=*/2000);
  });
  ASSERT_TRUE(WaitFor([&] { return m.queue_depth() == 1; }));
  EXPECT_EQ(expired.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The server finishes the call once the batch has formed and dropped the frame.
  ASSERT_TRUE(WaitFor([&] { return m.in_flight() == 0; }));
  EXPECT_EQ(m.frames(), 0u);
  EXPECT_EQ(m.batches(), 0u);
  // And the server still serves.
  lipsync::v1::InferResponse r;
  EXPECT_TRUE(CallInfer(*s, MakeFrames(1, 2).request, &r, 60000).ok());
  EXPECT_EQ(m.frames(), 1u);
}

// Frames of a cancelled stream are dropped: four wait for company (5 s queue delay) when the
// stream is cancelled, and none of them reaches the engine.
TEST(ServerBatching, CancelledStreamFreesItsResources) {
  auto s = StartServer(Options(8, 5000000));
  ASSERT_TRUE(s);
  const Metrics& m = s->server->metrics();
  {
    grpc::ClientContext ctx;
    auto stream = s->stub->StreamInfer(&ctx);
    for (int i = 0; i < 4; ++i) {
      lipsync::v1::StreamInferRequest request;
      request.set_sequence(i);
      *request.mutable_request() = MakeFrames(1, i).request;
      ASSERT_TRUE(stream->Write(request));
    }
    ASSERT_TRUE(WaitFor([&] { return m.queue_depth() == 4; }));
    ctx.TryCancel();
    stream->Finish();
  }
  // The stream ends once its batch has formed and dropped its frames.
  EXPECT_TRUE(WaitFor([&] { return m.in_flight() == 0; }));
  EXPECT_EQ(m.frames(), 0u);  // the cancelled frames were dropped
  EXPECT_EQ(m.queue_depth(), 0);
  // And the server still serves.
  lipsync::v1::InferResponse r;
  EXPECT_TRUE(CallInfer(*s, MakeFrames(1, 9).request, &r, 60000).ok());
  EXPECT_EQ(m.frames(), 1u);
}

// Shutdown waits for an accepted request whose frames still wait for company, which runs at once
// (nothing more will come to a draining server) and is answered whole: its answer must reach the
// client, which gRPC's own shutdown alone loses on rare runs (it closes the connection the moment
// the call is answered, and a close that meets bytes the client sent resets it).
TEST(ServerBatching, ShutdownDrainsAcceptedRequests) {
  ServerOptions o = Options(8, 120000000);  // a lone frame would wait two minutes for company
  o.drain_timeout = std::chrono::seconds(120);
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  const Metrics& m = s->server->metrics();
  Frames f = MakeFrames(2, 1);
  auto pending = std::async(std::launch::async, [&] {
    lipsync::v1::InferResponse r;
    auto st = CallInfer(*s, f.request, &r, 300000);
    return std::make_pair(st, r);
  });
  // Accepted: the call counts as in flight until it is answered.
  ASSERT_TRUE(WaitFor([&] { return m.in_flight() == 1; }));
  EXPECT_EQ(m.frames(), 0u);  // its frames still wait
  const auto stop = Clock::now();
  std::thread stopper([&] { s->server->Shutdown(); });
  auto [status, response] = pending.get();
  stopper.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(MaxAbsDiff(response.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 0.0);
  EXPECT_EQ(m.frames(), 2u);
  EXPECT_EQ(m.requests("Infer", "OK"), 1u);
  EXPECT_LT(Clock::now() - stop, std::chrono::seconds(60))
      << "the waiting frames waited for company that a draining server never gets";
  lipsync::v1::InferResponse after;
  EXPECT_FALSE(CallInfer(*s, f.request, &after, 2000).ok());
}

}  // namespace
}  // namespace lipsync::server::testing

namespace lipsync::server::testing {
namespace {

std::vector<BatchItem> OneFrame(uint64_t seed) {
  Frames f = MakeFrames(1, seed);
  BatchItem item;
  for (auto& t : f.engine_inputs) item.inputs.push_back(std::move(t));
  std::vector<BatchItem> items;
  items.push_back(std::move(item));
  return items;
}

std::unique_ptr<Engine> TinyEngine() {
  EngineOptions eo;
  eo.intra_op_threads = 1;
  auto engine = Engine::Create(kTestData + "/tiny.onnx", eo);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// Holds the batcher's scheduler thread inside a completion (it runs there when nothing else is
// queued) until Release(), so that what the test submits meanwhile is all queued at once.
class ParkedScheduler {
 public:
  explicit ParkedScheduler(Batcher& batcher) : release_future_(release_.get_future().share()) {
    auto ticket = std::make_shared<Ticket>(1, Clock::time_point::max(), [this](Ticket&) {
      parked_.set_value();
      release_future_.wait();
    });
    EXPECT_TRUE(batcher.Submit(ticket, OneFrame(1)).ok());
    parked_.get_future().wait();
  }
  void Release() { release_.set_value(); }

 private:
  std::promise<void> parked_, release_;
  std::shared_future<void> release_future_;
};

// While frames wait, a finished request's answer is encoded off the scheduler thread: a slow
// completion must not hold up the next batch. The scheduler is first parked in a completion (it
// runs there, nothing else being queued) so that A and B are both queued when it resumes. A's
// completion then waits for B's: if B's only ran after A's, A gives up after a minute and the test
// fails.
TEST(ServerBatching, SlowCompletionDoesNotDelayTheNextBatch) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  Metrics metrics;
  BatcherOptions bo;
  bo.max_batch = 1;
  bo.max_queue_delay = std::chrono::microseconds(0);
  Batcher batcher(engine.get(), bo, &metrics);
  ParkedScheduler park(batcher);

  std::promise<void> b_answered;
  auto b_future = b_answered.get_future();
  std::atomic<bool> a_finished{false}, b_came_first{false};
  auto a = std::make_shared<Ticket>(1, Clock::time_point::max(), [&](Ticket& t) {
    EXPECT_TRUE(t.status().ok());
    b_came_first = b_future.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    a_finished = true;
  });
  auto b = std::make_shared<Ticket>(1, Clock::time_point::max(), [&](Ticket& t) {
    EXPECT_TRUE(t.status().ok());
    EXPECT_FALSE(a_finished) << "B was answered only after A's slow completion";
    b_answered.set_value();
  });
  ASSERT_TRUE(batcher.Submit(a, OneFrame(2)).ok());
  ASSERT_TRUE(batcher.Submit(b, OneFrame(3)).ok());
  park.Release();
  // Shutdown still delivers the answer being encoded on the completion thread.
  batcher.Shutdown(std::chrono::milliseconds(120000));
  EXPECT_TRUE(a_finished);
  EXPECT_TRUE(b_came_first) << "A's completion waited a minute and B was still not answered";
  EXPECT_EQ(metrics.frames(), 3u);
}

// With a preferred batch below max batch, waiting frames are grouped in batches of that size.
TEST(ServerBatching, PreferredBatchCapsTheBatches) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  Metrics metrics;
  BatcherOptions bo;
  bo.max_batch = 8;
  bo.preferred_batch = 2;
  bo.max_queue_delay = std::chrono::microseconds(0);
  Batcher batcher(engine.get(), bo, &metrics);
  EXPECT_EQ(batcher.batch_limit(), 2);
  ParkedScheduler park(batcher);
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    auto t = std::make_shared<Ticket>(1, Clock::time_point::max(), [&](Ticket& done) {
      if (done.status().ok()) ++ok;
    });
    ASSERT_TRUE(batcher.Submit(t, OneFrame(20 + i)).ok());
  }
  park.Release();
  batcher.Shutdown(std::chrono::milliseconds(30000));
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(metrics.batches_of_size(2), 4u) << metrics.RenderPrometheus();
  for (int size = 3; size <= 8; ++size) EXPECT_EQ(metrics.batches_of_size(size), 0u) << size;
}

TEST(ServerBatching, TuningTimesEachSizeAndPicksTheSmallestNearTheBest) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  BatchTuningOptions to;
  to.max_batch = 6;
  std::vector<int> seen;
  auto tuning =
      TunePreferredBatch(*engine, to, [&](const BatchTiming& t) { seen.push_back(t.batch); });
  ASSERT_TRUE(tuning.ok()) << tuning.status().ToString();
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 4, 6}));
  ASSERT_EQ(tuning->timings.size(), 4u);
  double best = 1e300;
  for (const auto& t : tuning->timings) {
    EXPECT_GT(t.ms_per_frame, 0.0);
    best = std::min(best, t.ms_per_frame);
  }
  const BatchTiming* chosen = nullptr;
  for (const auto& t : tuning->timings) {
    if (t.batch == tuning->preferred_batch) chosen = &t;
  }
  ASSERT_NE(chosen, nullptr);
  EXPECT_LE(chosen->ms_per_frame, best * 1.05);
  // No smaller size was within the tolerance.
  for (const auto& t : tuning->timings) {
    if (t.batch < chosen->batch) {
      EXPECT_GT(t.ms_per_frame, best * 1.05);
    }
  }
  to.max_batch = 0;
  EXPECT_EQ(TunePreferredBatch(*engine, to).status().code(), StatusCode::kInvalidArgument);
}

// Every accepted request is answered by the time Shutdown returns, wherever its completion ran.
TEST(ServerBatching, ShutdownRunsEveryCompletion) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  Metrics metrics;
  BatcherOptions bo;
  bo.max_batch = 2;
  Batcher batcher(engine.get(), bo, &metrics);
  constexpr int kTickets = 24;
  std::atomic<int> ok{0}, answered{0};
  for (int i = 0; i < kTickets; ++i) {
    auto ticket = std::make_shared<Ticket>(1, Clock::time_point::max(), [&](Ticket& t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      if (t.status().ok()) ++ok;
      ++answered;
    });
    ASSERT_TRUE(batcher.Submit(ticket, OneFrame(10 + i)).ok());
  }
  batcher.Shutdown(std::chrono::milliseconds(30000));
  EXPECT_EQ(answered.load(), kTickets);
  EXPECT_EQ(ok.load(), kTickets);
}

// A completion callback may hold what holds its ticket (a stream keeps its tickets in slots the
// callback captures). The batcher must drop the callback after running it, or both leak.
TEST(ServerBatching, CompletedTicketReleasesWhatItsCallbackHeld) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  Metrics metrics;
  Batcher batcher(engine.get(), BatcherOptions{}, &metrics);
  struct Holder {
    std::shared_ptr<Ticket> ticket;
  };
  std::weak_ptr<Holder> watch;
  std::promise<void> done;
  {
    auto holder = std::make_shared<Holder>();
    holder->ticket = std::make_shared<Ticket>(1, Clock::time_point::max(),
                                              [holder, &done](Ticket&) { done.set_value(); });
    watch = holder;
    BatchItem item;
    Frames f = MakeFrames(1, 1);
    for (auto& t : f.engine_inputs) item.inputs.push_back(std::move(t));
    std::vector<BatchItem> items;
    items.push_back(std::move(item));
    ASSERT_TRUE(batcher.Submit(holder->ticket, std::move(items)).ok());
  }
  done.get_future().wait();
  batcher.Shutdown(std::chrono::milliseconds(1000));
  EXPECT_TRUE(watch.expired());
}

// With two schedulers (what a GPU backend gets), batches of all three forms run side by side:
// every frame still gets its own answer, equal to the engine's for it alone, and shutdown waits
// for both schedulers.
TEST(ServerBatching, TwoSchedulersKeepEveryAnswerApart) {
  auto engine = TinyEngine();
  ASSERT_TRUE(engine);
  Metrics metrics;
  BatcherOptions bo;
  bo.max_batch = 3;
  bo.max_queue_delay = std::chrono::microseconds(0);
  bo.schedulers = 2;
  Batcher batcher(engine.get(), bo, &metrics);
  constexpr int kRequests = 24;
  const ItemForm forms[] = {ItemForm::kTensors, ItemForm::kFrames, ItemForm::kFramesToImages};
  std::vector<Tensor> expected;
  std::vector<std::promise<Tensor>> answers(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    const ItemForm form = forms[i % 3];
    const int frames = 1 + i % 2;
    Frames f = MakeFrames(frames, 500 + i);
    std::vector<BatchItem> items;
    if (form == ItemForm::kTensors) {
      expected.push_back(EngineOutput(*engine, f.engine_inputs));
      for (int k = 0; k < frames; ++k) {
        BatchItem one;
        for (const auto& t : f.engine_inputs) {
          Shape shape = t.shape();
          shape[0] = 1;
          Tensor row = Tensor::Uninitialized(t.dtype(), shape);
          std::memcpy(row.data(), static_cast<const char*>(t.data()) + k * row.byte_size(),
                      row.byte_size());
          one.inputs.push_back(std::move(row));
        }
        items.push_back(std::move(one));
      }
    } else {
      const auto& wire = f.request.frames();
      Tensor faces(DataType::kUInt8, {frames, 320, 320, 3});
      for (int k = 0; k < frames; ++k) {
        std::memcpy(faces.data_as<uint8_t>() + k * 320 * 320 * 3, wire.frames(k).face_bgr().data(),
                    320 * 320 * 3);
      }
      const bool images = form == ItemForm::kFramesToImages;
      Tensor want = images ? Tensor(DataType::kUInt8, {frames, 320, 320, 3})
                           : Tensor(DataType::kFloat32, {frames, 3, 320, 320});
      ASSERT_TRUE(
          engine->RunFrames({faces.view(), f.engine_inputs[1].view()}, want.mutable_view()).ok());
      expected.push_back(std::move(want));
      for (int k = 0; k < frames; ++k) {
        BatchItem one;
        one.form = form;
        Tensor face(DataType::kUInt8, {1, 320, 320, 3});
        std::memcpy(face.data(), faces.data_as<uint8_t>() + k * face.byte_size(), face.byte_size());
        Tensor audio(DataType::kFloat32, {1, 32, 16, 16});
        std::memcpy(audio.data(), f.engine_inputs[1].data_as<float>() + k * 32 * 16 * 16,
                    audio.byte_size());
        one.inputs.push_back(std::move(face));
        one.inputs.push_back(std::move(audio));
        items.push_back(std::move(one));
      }
    }
    auto ticket = std::make_shared<Ticket>(frames, Clock::time_point::max(), [&, i](Ticket& t) {
      EXPECT_TRUE(t.status().ok()) << t.status().ToString();
      answers[i].set_value(t.status().ok() ? t.outputs()[0].Clone() : Tensor());
    });
    ASSERT_TRUE(batcher.Submit(ticket, std::move(items)).ok());
  }
  for (int i = 0; i < kRequests; ++i) {
    const Tensor got = answers[i].get_future().get();
    const Tensor& want = expected[i];
    ASSERT_EQ(got.shape(), want.shape()) << "request " << i;
    if (want.dtype() == DataType::kUInt8) {
      int worst = 0;
      for (int64_t k = 0; k < want.element_count(); ++k) {
        worst = std::max(
            worst, std::abs(int(got.data_as<uint8_t>()[k]) - int(want.data_as<uint8_t>()[k])));
      }
      EXPECT_LE(worst, 1) << "request " << i;  // batching may move a value across a step
    } else {
      double worst = 0;
      for (int64_t k = 0; k < want.element_count(); ++k) {
        worst =
            std::max(worst, double(std::fabs(got.data_as<float>()[k] - want.data_as<float>()[k])));
      }
      EXPECT_LE(worst, 1e-5) << "request " << i;
    }
  }
  batcher.Shutdown(std::chrono::milliseconds(5000));
  EXPECT_EQ(metrics.frames(), static_cast<uint64_t>(kRequests / 2 + kRequests));
}

}  // namespace
}  // namespace lipsync::server::testing
