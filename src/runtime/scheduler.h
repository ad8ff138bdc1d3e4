// One scheduler per device: every caller's frames for every avatar UNet on the device run here
// (the server's live sessions, its monolithic, lipsyncsrv, lipsync.v1 and KServe services, and
// `lipsync render`), so that the callers of one model share its batches and the models of the
// device share its runs. It sits below the pipeline and the server: it needs the engine only.
//
// A caller submits a Job: the frames of one request for one model, as faces (the frame form) or
// as the model's float visual input (or, for a model without the frame form, as its tensors),
// with its priority (live or offline), origin, deadline and cancel flag. Each model has a queue.
// Worker threads, as many as the backend overlaps runs (BackendCapabilities::overlapping_runs: CUDA
// streams; one on the CPU, whose cores one run already uses) or as the models' max_runs ask,
// take the next batch: from a model with live frames first (offline frames get one batch after
// every `live_burst` live ones while live ones wait, so neither starves), round robin across
// models, up to the model's batch limit once that many frames wait or the oldest has waited
// `max_delay`. A model runs max_runs batches at a time (one by default; a model loaded as several
// copies runs each batch on a copy no other batch is using). A batch holds frames of any callers of
// that model, live ones first; fixed-batch models are split and padded here (batch_run.h) and
// nowhere else. Frames whose caller gave up (cancelled, past the deadline) are dropped before they
// run. An exception in a run (a failed allocation) fails that batch's jobs and nothing else. What
// the owner counts (the server's metrics) it learns through a SchedulerListener, per batch and per
// change of the queue depth.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "lipsync/engine.h"
#include "lipsync/face_layout.h"
#include "lipsync/memory.h"

namespace lipsync::runtime {

using SchedulerClock = std::chrono::steady_clock;

enum class Priority { kLive, kOffline };

// Who submitted a job (batches count their frames by origin).
// kWarmup: an avatar's UNet run once at each live batch size as it loads (AvatarRegistryOptions).
enum class Origin { kSession, kMonolithic, kLipSyncSrv, kV1, kKServe, kTest, kRender, kWarmup };
constexpr int kOriginCount = 8;
const char* OriginName(Origin origin);

struct BatchRecord;

struct ModelConfig {
  std::string name;   // in logs and errors
  int max_batch = 8;  // frames per run (a fixed-batch model runs its own batch, padded)
  // Longest the oldest frame waits for more while the device is free; 0: a free worker takes
  // what waits at once (frames still share batches while the model is busy).
  std::chrono::microseconds max_delay{0};
  int64_t max_queue = 4096;               // frames waiting at most; more: RESOURCE_EXHAUSTED
  FaceLayout layout;                      // the frame form's faces (to mix faces with float jobs)
  int visual_input = 0, audio_input = 1;  // the model's input indices
  // False for a model without the frame form: its jobs give every input and output (Job::inputs).
  bool frame_form = true;
  // Batches of this model in flight at once (2: one uploads, one computes); with several copies
  // of the model (Scheduler::AddModel) at most one per copy.
  int max_runs = 1;
  // Runs on the worker after each batch of this model that ran (its owner's accounting).
  std::function<void(const BatchRecord&)> on_batch;
};

// When the job's frames waited and ran, filled in before `done` runs.
struct JobTimes {
  double queue_seconds = 0;  // the longest any of its frames waited for its batch
  double run_seconds = 0;    // the longest run of one of its batches
  // CPU time of the scheduler's threads in its batches' runs, summed (0 where the platform has
  // no per-thread CPU clock). Work a backend hands to threads of its own is not in it.
  double run_cpu_seconds = 0;
};

// The frames of one request for one model. The views are the caller's buffers: read and written
// by the scheduler until `done` has run; `keep_alive` holds what they belong to (and the engine).
struct Job {
  // uint8 [n,S,S,3] inner faces or [n,C,C,3] crops (whose centre is used), or the model's float32
  // visual input [n,6,S,S].
  TensorView visual;
  TensorView audio;  // float32 [n,...] as the model declares it
  // uint8 [n,S,S,3] BGR faces, or the model's float32 output [n,3,S,S].
  MutableTensorView output;
  // The tensor form of a model without the frame form (ModelConfig::frame_form false): a view of
  // [n,...] per model input and output; `visual`, `audio` and `output` stay empty.
  std::vector<TensorView> inputs;
  std::vector<MutableTensorView> outputs;
  Priority priority = Priority::kOffline;
  Origin origin = Origin::kTest;
  SchedulerClock::time_point deadline = SchedulerClock::time_point::max();
  const std::atomic<bool>* cancelled = nullptr;  // optional; kept alive by keep_alive
  const void* caller = nullptr;  // jobs of one caller (a live session) share it, for metrics
  JobTimes* times = nullptr;     // optional; kept alive by keep_alive
  // Runs once, on a worker: OK when every frame ran, else the first failure.
  std::function<void(const Status&)> done;
  std::shared_ptr<const void> keep_alive;
};

// What one batch holds, for observers and metrics.
struct BatchRecord {
  std::string model;
  int rows = 0;    // frames of callers
  int padded = 0;  // rows the model ran (a fixed batch pads)
  int live = 0;
  int callers = 0;  // distinct live callers (sessions)
  std::array<int, kOriginCount> by_origin{};
  double seconds = 0;  // the run's time (0 for the observer, which runs before it)
  // Per part of the batch (a job's rows): seconds its frames waited in the queue, and how many
  // frames (empty for the observer).
  std::vector<std::pair<double, int64_t>> waits;
};

// The owner's accounting of a scheduler (the server's metrics), told as the scheduler works.
class SchedulerListener {
 public:
  virtual ~SchedulerListener() = default;
  // On the worker, after each batch that ran (before the batch listener).
  virtual void OnBatch(const BatchRecord& record) = 0;
  // Frames waiting on every model of the scheduler, whenever that changes. Called with the
  // scheduler's lock held: it must not call the scheduler.
  virtual void OnQueueDepth(int64_t frames) = 0;
};

// Rows of a job: its first dimension.
int64_t JobRows(const Job& job);

class ScheduledModel;
namespace internal {
struct JobState;
}  // namespace internal

struct SchedulerOptions {
  std::string device = "cpu";  // for logs: "cpu", "cuda:0"
  // Batches in flight at once; 0: the largest BackendCapabilities::overlapping_runs of its models.
  int concurrency = 0;
  int live_burst = 4;  // live batches in a row at most while offline frames wait
  // Live frames in one batch at most (0: the model's limit); offline frames may fill the rest.
  int live_max_batch = 0;
};

// Counts since the scheduler started (Prometheus counters).
struct SchedulerTotals {
  int64_t batches = 0;
  int64_t mixed_batches = 0;  // batches with frames of more than one origin
  int64_t failed_batches = 0;
  std::array<int64_t, kOriginCount> rows_by_origin{};
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options);
  ~Scheduler();  // Shutdown()
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // A model on this device; it stays scheduled while anyone holds it. The engine must outlive
  // every job of it (Job::keep_alive).
  std::shared_ptr<ScheduledModel> AddModel(Engine* engine, ModelConfig config);
  // A model loaded as several copies (the same file and options, each with its share of the CPU
  // cores): a batch runs on a copy no other batch is running on, so up to min(max_runs, copies)
  // run at once. The same engine may be given twice where its calls overlap (CUDA streams).
  std::shared_ptr<ScheduledModel> AddModel(std::vector<Engine*> copies, ModelConfig config);

  // Queues the job. InvalidArgument for views that do not fit the model, ResourceExhausted when
  // the model's queue is full, Unavailable once the scheduler stops; `done` is not called then.
  Status Submit(const std::shared_ptr<ScheduledModel>& model, Job job);
  // Queues every job or none (one request's frames).
  Status SubmitAll(const std::shared_ptr<ScheduledModel>& model, std::vector<Job> jobs);
  // Answers every job of the model still queued with `why` (its caller stops); batches already
  // running finish.
  void Drop(const std::shared_ptr<ScheduledModel>& model, const Status& why);
  // Submits and waits for the job (for callers on threads of their own).
  Status Run(const std::shared_ptr<ScheduledModel>& model, Job job);

  // Stops the workers once their batches are done and answers what waits with UNAVAILABLE.
  void Shutdown();
  // From now on no frame waits for company (ModelConfig::max_delay): a free worker takes what
  // waits at once. For a server that drains, to which no more frames come.
  void StopWaiting();

  const std::string& device() const { return options_.device; }
  int concurrency() const;
  int64_t queued_rows(Origin origin) const;
  int64_t queued_rows() const;  // of every origin
  int in_flight() const;

  // Tests: no batch starts while paused; the observer runs on the worker before each batch runs
  // (it may block, holding that batch in flight).
  void Pause();
  void Resume();
  void SetBatchObserver(std::function<void(const BatchRecord&)> observer);
  // Runs on the worker after each batch that ran (metrics); replaces the previous one.
  void SetBatchListener(std::function<void(const BatchRecord&)> listener);
  // Called when a batch ran out of memory: true when it made room (evicted something), and the
  // batch is tried again.
  void SetMemoryHook(std::function<bool()> make_room);
  // Calls the memory hook: true when it made room. Callers that allocate a request's working
  // memory themselves try again after it, as a batch does.
  bool MakeRoom();
  // A caller's working memory (a request's tensors, a stream's batch) from the host pool, so
  // that its limit counts it: past the limit the memory hook makes room and it is tried again.
  // Null when no room can be made.
  std::unique_ptr<PoolBlock> AllocateWorking(size_t bytes);
  // SchedulerOptions::live_max_batch from now on, and what it is (0: the model's own limit).
  void SetLiveMaxBatch(int frames);
  int live_max_batch() const;
  // Every batch from now on and every change of the queue depth is told to `listener` (null: to
  // no one), which must outlive the scheduler's work; it is told the current depth at once.
  void SetListener(SchedulerListener* listener);
  SchedulerTotals totals() const;

 private:
  struct Batch;
  void WorkerLoop();
  std::shared_ptr<ScheduledModel> PickLocked(SchedulerClock::time_point now,
                                             SchedulerClock::time_point* wake);
  void TakeLocked(const std::shared_ptr<ScheduledModel>& model, Batch* batch,
                  std::vector<std::shared_ptr<internal::JobState>>* dropped);
  Status Execute(Batch& batch);
  void Finish(Batch& batch, const Status& status);
  void EnsureWorkersLocked(int count);
  void PublishDepthLocked();
  void Record(const Batch& batch);

  SchedulerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;  // work arrived, a batch finished, pause or stop changed
  std::vector<std::weak_ptr<ScheduledModel>> models_;
  size_t cursor_ = 0;    // round robin over models_
  int live_streak_ = 0;  // live batches in a row while offline frames waited
  int concurrency_ = 1;
  int in_flight_ = 0;
  std::array<int64_t, kOriginCount> queued_by_origin_{};
  bool stop_ = false, paused_ = false, no_waiting_ = false;
  std::function<void(const BatchRecord&)> observer_, listener_;
  std::function<bool()> make_room_;
  SchedulerListener* accounting_ = nullptr;
  SchedulerTotals totals_;
  std::vector<std::thread> workers_;
};

// A model and its queue (Scheduler::AddModel).
class ScheduledModel {
 public:
  Engine& engine() const { return *engines_.front(); }  // the first copy
  const ModelConfig& config() const { return config_; }
  // Frames per run: the model's own batch when fixed, else max_batch within the engine's limit.
  int batch_limit() const { return batch_limit_; }
  bool fixed_batch() const { return fixed_; }
  // Batches in flight at most: max_runs, and with several copies at most one per copy.
  int max_runs() const { return max_runs_; }

 private:
  friend class Scheduler;
  ScheduledModel(std::vector<Engine*> copies, ModelConfig config);

  struct Entry {
    std::shared_ptr<internal::JobState> job;
    int64_t row = 0, count = 0;
    SchedulerClock::time_point enqueued;
  };
  // Picks a copy no batch is running on (the only one when there is one) and marks it taken.
  Engine* TakeCopyLocked();
  void ReleaseCopyLocked(Engine* copy);

  std::vector<Engine*> engines_;
  ModelConfig config_;
  int batch_limit_ = 1;
  int max_runs_ = 1;
  bool fixed_ = false;
  // Guarded by the scheduler's mutex.
  std::deque<Entry> live_, offline_;
  int64_t queued_ = 0;
  int running_ = 0;          // batches in flight
  std::vector<bool> taken_;  // per copy: a batch runs on it (with several copies)
};

}  // namespace lipsync::runtime
