// The protocols' side of the device's scheduler (runtime/scheduler.h) for `serve --model`:
// lipsync.v1 Infer/StreamInfer and KServe ModelInfer submit here.
//
// Design. Network threads (gRPC's callback threads) decode and validate a request into one
// BatchItem per frame and hand them, with a Ticket for the request, to Submit(). Submit() never
// blocks: it queues every frame of the request as a job on the model's queue of the scheduler, or
// none (RESOURCE_EXHAUSTED when the queue lacks room, UNAVAILABLE once shutdown began). The
// scheduler decides what runs when, as for every other caller of the device: it takes up to the
// preferred batch of the model's frames (of any protocol and form, and of any other caller of the
// model) once that many wait or the oldest has waited `max_queue_delay`, drops frames whose
// ticket expired or was cancelled, and splits, pads and runs the batch; each frame's output is
// written straight into its ticket's outputs. Frames in the frame form go to Engine::RunFrames
// as faces (the backend builds the model input, on the GPU where it can). With a GPU backend two
// batches of the model run at once, so one is assembled and uploaded while the other computes.
// When a ticket's last frame is done, its completion callback (which encodes the response and
// hands it to gRPC) runs on the scheduler's thread if nothing else is queued, which keeps a lone
// request's latency low; when frames are waiting it runs on a completion thread instead, so that
// the next batch starts at once and the model does not sit idle while answers are encoded.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "lipsync/engine.h"
#include "runtime/scheduler.h"
#include "server/core/metrics.h"

namespace lipsync::server {

using Clock = runtime::SchedulerClock;

// How a frame reaches the engine (frames of every form may share a batch).
enum class ItemForm {
  kTensors,         // inputs: one tensor per model input
  kFrames,          // inputs: the face (uint8 [1,S,S,3]) and the audio window; float output
  kFramesToImages,  // the same, with BGR uint8 faces [1,S,S,3] as the output
};

// One frame, each tensor with batch dimension 1.
struct BatchItem {
  std::vector<Tensor> inputs;
  ItemForm form = ItemForm::kTensors;
};

// The state of one request while its frames are queued or running. Shared by the network side and
// the batcher.
class Ticket {
 public:
  using Completion = std::function<void(Ticket&)>;
  Ticket(size_t frames, Clock::time_point deadline, Completion on_complete);

  // Marks the request as abandoned: frames not yet run are dropped.
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }
  Clock::time_point deadline() const { return deadline_; }
  size_t frames() const { return frames_; }

  // Results, valid in the completion callback: OK with outputs [frames, ...] per model output (for
  // ItemForm::kFramesToImages one uint8 [frames,S,S,3] tensor of BGR faces), or the first error.
  const Status& status() const { return status_; }
  const std::vector<Tensor>& outputs() const { return outputs_; }
  double max_queue_ms() const { return max_queue_ms_; }
  double compute_ms() const { return compute_ms_; }

 private:
  friend class Batcher;
  // Each returns true when it finished the ticket (the caller then runs the completion).
  bool FrameDone(const runtime::JobTimes& times);
  bool FrameFailed(const Status& status);

  const size_t frames_;
  const Clock::time_point deadline_;
  Completion on_complete_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  size_t remaining_;
  Status status_;
  std::vector<Tensor> outputs_;
  double max_queue_ms_ = 0;
  double compute_ms_ = 0;
};

struct BatcherOptions {
  int max_batch = 8;
  // The batch size aimed for (1..max_batch; 0: max_batch): a batch starts when this many frames
  // wait, or when the oldest has waited max_queue_delay, and never holds more.
  // kAutoPreferredBatch: Server::Start times the engine and picks it (see batch_tuning.h).
  static constexpr int kAutoPreferredBatch = -1;
  int preferred_batch = 0;
  std::chrono::microseconds max_queue_delay{2000};
  size_t max_queue = 256;  // frames waiting, across all requests
  // Batches of the model in flight at once on the scheduler (1 or 2). 0: two when the engine's
  // capabilities report overlapping runs (a GPU backend), else one.
  int schedulers = 0;
};

class Batcher {
 public:
  // On a scheduler of its own (a model served alone; tests).
  Batcher(Engine* engine, BatcherOptions options, Metrics* metrics);
  // On the device's scheduler, shared with every other caller of the device. Its batches are
  // counted in the metrics the scheduler was given (Scheduler::SetListener).
  Batcher(Engine* engine, BatcherOptions options, Metrics* metrics,
          std::shared_ptr<runtime::Scheduler> scheduler, std::string model_name = "lipsync");
  ~Batcher();  // stops and drains

  // Admits all of a request's frames or none; `origin` is the protocol that sent them.
  Status Submit(std::shared_ptr<Ticket> ticket, std::vector<BatchItem> items,
                runtime::Origin origin = runtime::Origin::kV1);

  // Stops admitting new frames; frames already queued still run. Returns when they have run, or
  // after `timeout` (then the queued rest fail with UNAVAILABLE and running batches finish).
  void Shutdown(std::chrono::milliseconds timeout);

  const BatcherOptions& options() const { return options_; }
  // The most frames one batch holds: preferred_batch, or max_batch when none is set.
  int batch_limit() const { return batch_limit_; }
  size_t queue_depth() const;
  runtime::Scheduler& scheduler() const { return *scheduler_; }

 private:
  // One frame's job: its views into the item and the ticket's outputs.
  Result<runtime::Job> MakeJob(const std::shared_ptr<Ticket>& ticket, size_t index,
                               std::shared_ptr<BatchItem> item, runtime::Origin origin);
  void FrameFinished(const std::shared_ptr<Ticket>& ticket, const runtime::JobTimes& times,
                     const Status& status);
  void Finish(const std::shared_ptr<Ticket>& ticket, bool finished);
  // Runs the completion of a finished ticket, here or on the completion thread (see above).
  void Complete(const std::shared_ptr<Ticket>& ticket);
  void CompletionLoop();

  Engine* engine_;
  const BatcherOptions options_;
  const int batch_limit_;
  std::shared_ptr<runtime::Scheduler> scheduler_;
  std::shared_ptr<runtime::ScheduledModel> model_;

  mutable std::mutex mu_;
  std::condition_variable drained_cv_;
  bool accepting_ = true;
  bool stopped_ = false;
  int64_t pending_ = 0;  // frames submitted whose job has not answered yet

  std::mutex completion_mu_;
  std::condition_variable completion_cv_;
  std::deque<std::shared_ptr<Ticket>> completions_;
  bool completion_stop_ = false;
  std::thread completer_;
};

}  // namespace lipsync::server
