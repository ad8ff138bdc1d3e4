// The dynamic batcher: the only code that calls the engine in the server.
//
// Design. Network threads (gRPC's callback threads) decode and validate a request into one
// BatchItem per frame and hand them, with a Ticket for the request, to Submit(). Submit() never
// blocks: it admits all the request's frames or none (RESOURCE_EXHAUSTED when the bounded queue
// lacks room, UNAVAILABLE once shutdown began). Scheduler threads own the engine: one waits for
// the first frame, then up to `max_queue_delay` for more, takes up to `max_batch` frames of one
// form (from any requests and streams), drops frames whose ticket expired or was cancelled, runs
// the engine once and copies each frame's output into its ticket. Frames in the frame form go to
// Engine::RunFrames as faces (the backend builds the model input, on the GPU where it can), so the
// server never makes a float visual input. There is one scheduler thread, or two when the engine
// overlaps runs (a GPU backend): then one batch is assembled and uploaded while the other computes,
// and the GPU does not wait for the host. When a ticket's last frame is done, its
// completion callback (which encodes the response and hands it to gRPC) runs on the scheduler
// thread if nothing else is queued, which keeps a lone request's latency low; when frames are
// waiting it runs on a completion thread instead, so that the next batch starts at once and the
// model does not sit idle while answers are encoded.
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
#include "server/core/metrics.h"

namespace lipsync::server {

using Clock = std::chrono::steady_clock;

// How a frame reaches the engine, and so which frames may share a batch.
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
  bool FrameDone(size_t index, const std::vector<MutableTensorView>& batch_outputs, size_t row,
                 double queue_ms, double compute_ms);
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
  // Scheduler threads, each forming and running its own batches (1 or 2). 0: two when the
  // engine's capabilities report overlapping runs (a GPU backend), else one.
  int schedulers = 0;
};

class Batcher {
 public:
  Batcher(Engine* engine, BatcherOptions options, Metrics* metrics);
  ~Batcher();  // stops and drains

  // Admits all of a request's frames or none.
  Status Submit(std::shared_ptr<Ticket> ticket, std::vector<BatchItem> items);

  // Stops admitting new frames; frames already queued still run. Returns when the queue is empty
  // and the scheduler has exited, or after `timeout` (then the rest fail with UNAVAILABLE).
  void Shutdown(std::chrono::milliseconds timeout);

  const BatcherOptions& options() const { return options_; }
  // The most frames one batch holds: preferred_batch, or max_batch when none is set.
  int batch_limit() const { return batch_limit_; }
  size_t queue_depth() const;

 private:
  struct Queued {
    std::shared_ptr<Ticket> ticket;
    size_t index;
    BatchItem item;
    Clock::time_point enqueued;
  };

  // Batch buffers for up to batch_limit frames, one set per scheduler thread.
  struct Buffers {
    std::vector<Tensor> inputs, outputs;  // tensor form
    Tensor faces, audio, images, planes;  // frame form, made on first use
  };

  void SchedulerLoop(Buffers* buffers);
  // Moves up to batch_limit frames of the oldest frame's form from the queue into `batch`.
  void TakeBatch(std::vector<Queued>& batch);
  void RunBatch(std::vector<Queued>& batch, Buffers& buffers);
  Status RunFrameBatch(std::vector<Queued*>& live, Buffers& buffers,
                       std::vector<MutableTensorView>& outputs);
  void Finish(const std::shared_ptr<Ticket>& ticket, bool finished);
  // Runs the completions of finished tickets, here or on the completion thread (see above).
  void Complete(std::vector<std::shared_ptr<Ticket>>& finished);
  void CompletionLoop();

  Engine* engine_;
  const BatcherOptions options_;
  const int batch_limit_;
  Metrics* metrics_;
  std::vector<std::unique_ptr<Buffers>> buffers_;

  std::mutex forming_mu_;  // held by the scheduler that is forming a batch
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_cv_;
  std::deque<Queued> queue_;
  bool accepting_ = true;
  bool stop_ = false;
  int running_batches_ = 0;
  std::vector<std::thread> schedulers_;

  std::mutex completion_mu_;
  std::condition_variable completion_cv_;
  std::deque<std::shared_ptr<Ticket>> completions_;
  bool completion_stop_ = false;
  std::thread completer_;
};

}  // namespace lipsync::server
