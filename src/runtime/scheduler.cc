#include "runtime/scheduler.h"

#include <spdlog/spdlog.h>
#include <time.h>

#include <algorithm>

#include "runtime/batch_run.h"
#include "runtime/catch_all.h"

namespace lipsync::runtime {

const char* OriginName(Origin origin) {
  switch (origin) {
    case Origin::kSession:
      return "session";
    case Origin::kMonolithic:
      return "monolithic";
    case Origin::kLipSyncSrv:
      return "lipsyncsrv";
    case Origin::kV1:
      return "v1";
    case Origin::kKServe:
      return "kserve";
    case Origin::kTest:
      return "test";
    case Origin::kRender:
      return "render";
    case Origin::kWarmup:
      return "warmup";
  }
  return "unknown";
}

int64_t JobRows(const Job& job) {
  const Shape& shape = job.inputs.empty() ? job.visual.shape : job.inputs.front().shape;
  return shape.empty() ? 0 : shape[0];
}

namespace internal {

// A job while it is queued or running. Guarded by the scheduler's mutex except `job`'s views.
struct JobState {
  Job job;
  int64_t rows_left = 0;  // rows not yet run or dropped
  Status status;          // the first failure
  bool failed = false;    // later parts of it are dropped

  bool GaveUp(SchedulerClock::time_point now) const {
    return failed || (job.cancelled && job.cancelled->load()) || now >= job.deadline;
  }
  Status WhyGaveUp(SchedulerClock::time_point now) const {
    if (failed) return status;
    if (job.cancelled && job.cancelled->load()) return Status(StatusCode::kCancelled, "cancelled");
    (void)now;
    return Status(StatusCode::kDeadlineExceeded, "the deadline passed before the frames ran");
  }
};

}  // namespace internal

using internal::JobState;

namespace {

// The calling thread's CPU time: what a batch's run cost on the worker (JobTimes).
double ThreadCpuSeconds() {
#if defined(CLOCK_THREAD_CPUTIME_ID) && !defined(_WIN32)
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
#else
  return 0;
#endif
}

}  // namespace

struct Scheduler::Batch {
  std::shared_ptr<ScheduledModel> model;
  std::vector<std::shared_ptr<JobState>> jobs;  // one per part
  std::vector<BatchPart> parts;
  std::vector<SchedulerClock::time_point> enqueued;  // per part
  SchedulerClock::time_point started;
  Engine* engine = nullptr;  // the copy of the model it runs on
  double cpu_seconds = 0;    // the worker's CPU time in the run
  BatchRecord record;
};

ScheduledModel::ScheduledModel(std::vector<Engine*> copies, ModelConfig config)
    : engines_(std::move(copies)), config_(std::move(config)) {
  const ModelInfo& info = engine().info();
  fixed_ = !info.dynamic_batch;
  batch_limit_ = fixed_ ? static_cast<int>(std::max<int64_t>(1, info.max_batch))
                        : static_cast<int>(std::clamp<int64_t>(
                              config_.max_batch, 1, std::max<int64_t>(1, info.max_batch)));
  max_runs_ = std::max(1, config_.max_runs);
  if (engines_.size() > 1) {
    max_runs_ = std::min(max_runs_, static_cast<int>(engines_.size()));
    taken_.assign(engines_.size(), false);
  }
}

Engine* ScheduledModel::TakeCopyLocked() {
  if (engines_.size() == 1) return engines_.front();
  for (size_t i = 0; i < engines_.size(); ++i) {
    if (!taken_[i]) {
      taken_[i] = true;
      return engines_[i];
    }
  }
  return nullptr;  // not reached: a model runs no more batches than it has copies
}

void ScheduledModel::ReleaseCopyLocked(Engine* copy) {
  for (size_t i = 0; i < taken_.size(); ++i) {
    if (taken_[i] && engines_[i] == copy) {
      taken_[i] = false;
      return;
    }
  }
}

Scheduler::Scheduler(SchedulerOptions options) : options_(std::move(options)) {
  concurrency_ = std::max(1, options_.concurrency);
}

Scheduler::~Scheduler() { Shutdown(); }

void Scheduler::Shutdown() {
  std::vector<std::shared_ptr<JobState>> left;
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    workers.swap(workers_);
    for (auto& weak : models_) {
      auto model = weak.lock();
      if (!model) continue;
      for (auto* queue : {&model->live_, &model->offline_}) {
        for (auto& e : *queue) left.push_back(e.job);
        queue->clear();
      }
      model->queued_ = 0;
    }
    queued_by_origin_.fill(0);
    PublishDepthLocked();
  }
  cv_.notify_all();
  for (auto& t : workers) {
    // A worker never joins itself (it may hold the last reference to what owns the scheduler).
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
    } else {
      t.join();
    }
  }
  for (auto& job : left) {
    bool last = false;
    {
      std::lock_guard lock(mu_);
      last = job->rows_left > 0;
      job->rows_left = 0;
    }
    if (last && job->job.done)
      job->job.done(Status(StatusCode::kUnavailable, "the scheduler is stopping"));
  }
}

std::shared_ptr<ScheduledModel> Scheduler::AddModel(Engine* engine, ModelConfig config) {
  return AddModel(std::vector<Engine*>{engine}, std::move(config));
}

std::shared_ptr<ScheduledModel> Scheduler::AddModel(std::vector<Engine*> copies,
                                                    ModelConfig config) {
  Engine* engine = copies.front();
  std::shared_ptr<ScheduledModel> model(new ScheduledModel(std::move(copies), std::move(config)));
  std::lock_guard lock(mu_);
  models_.erase(
      std::remove_if(models_.begin(), models_.end(), [](const auto& w) { return w.expired(); }),
      models_.end());
  models_.push_back(model);
  if (options_.concurrency <= 0) {
    concurrency_ =
        std::max({concurrency_, engine->capabilities().overlapping_runs, model->max_runs()});
  }
  EnsureWorkersLocked(concurrency_);
  return model;
}

void Scheduler::EnsureWorkersLocked(int count) {
  while (static_cast<int>(workers_.size()) < count) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

Status Scheduler::Submit(const std::shared_ptr<ScheduledModel>& model, Job job) {
  std::vector<Job> jobs;
  jobs.push_back(std::move(job));
  return SubmitAll(model, std::move(jobs));
}

Status Scheduler::SubmitAll(const std::shared_ptr<ScheduledModel>& model, std::vector<Job> jobs) {
  std::vector<std::shared_ptr<JobState>> states;
  int64_t rows = 0;
  for (Job& job : jobs) {
    LIPSYNC_RETURN_IF_ERROR(CheckJob(model->engine(), model->config(), job));
    auto state = std::make_shared<JobState>();
    state->rows_left = JobRows(job);
    rows += state->rows_left;
    state->job = std::move(job);
    states.push_back(std::move(state));
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) return Status(StatusCode::kUnavailable, "the scheduler has stopped");
    if (model->queued_ + rows > model->config().max_queue) {
      return ResourceExhausted("model '" + model->config().name + "': the queue is full (" +
                               std::to_string(model->queued_) + " of " +
                               std::to_string(model->config().max_queue) +
                               " frames waiting); retry later");
    }
    const auto now = SchedulerClock::now();
    for (auto& state : states) {
      auto& queue = state->job.priority == Priority::kLive ? model->live_ : model->offline_;
      queue.push_back({state, 0, state->rows_left, now});
      queued_by_origin_[static_cast<size_t>(state->job.origin)] += state->rows_left;
    }
    model->queued_ += rows;
    PublishDepthLocked();
  }
  cv_.notify_all();
  return Status::Ok();
}

void Scheduler::Drop(const std::shared_ptr<ScheduledModel>& model, const Status& why) {
  std::vector<std::shared_ptr<JobState>> finished;
  {
    std::lock_guard lock(mu_);
    for (auto* queue : {&model->live_, &model->offline_}) {
      for (auto& e : *queue) {
        JobState& job = *e.job;
        if (!job.failed) job.status = why;
        job.failed = true;
        job.rows_left -= e.count;
        model->queued_ -= e.count;
        queued_by_origin_[static_cast<size_t>(job.job.origin)] -= e.count;
        if (job.rows_left == 0) finished.push_back(e.job);
      }
      queue->clear();
    }
    PublishDepthLocked();
  }
  cv_.notify_all();
  for (auto& job : finished) {
    if (job->job.done) job->job.done(job->status);
  }
}

void Scheduler::PublishDepthLocked() {
  if (!accounting_) return;
  int64_t depth = 0;
  for (int64_t rows : queued_by_origin_) depth += rows;
  accounting_->OnQueueDepth(depth);
}

Status Scheduler::Run(const std::shared_ptr<ScheduledModel>& model, Job job) {
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
  };
  auto waiter = std::make_shared<Waiter>();
  job.done = [waiter](const Status& status) {
    {
      std::lock_guard lock(waiter->mu);
      waiter->done = true;
      waiter->status = status;
    }
    waiter->cv.notify_all();
  };
  LIPSYNC_RETURN_IF_ERROR(Submit(model, std::move(job)));
  std::unique_lock lock(waiter->mu);
  waiter->cv.wait(lock, [&] { return waiter->done; });
  return waiter->status;
}

int Scheduler::concurrency() const {
  std::lock_guard lock(mu_);
  return concurrency_;
}

int64_t Scheduler::queued_rows(Origin origin) const {
  std::lock_guard lock(mu_);
  return queued_by_origin_[static_cast<size_t>(origin)];
}

int64_t Scheduler::queued_rows() const {
  std::lock_guard lock(mu_);
  int64_t rows = 0;
  for (int64_t r : queued_by_origin_) rows += r;
  return rows;
}

int Scheduler::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

void Scheduler::Pause() {
  std::lock_guard lock(mu_);
  paused_ = true;
}

void Scheduler::StopWaiting() {
  {
    std::lock_guard lock(mu_);
    no_waiting_ = true;
  }
  cv_.notify_all();
}

void Scheduler::Resume() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

void Scheduler::SetBatchObserver(std::function<void(const BatchRecord&)> observer) {
  std::lock_guard lock(mu_);
  observer_ = std::move(observer);
}

void Scheduler::SetBatchListener(std::function<void(const BatchRecord&)> listener) {
  std::lock_guard lock(mu_);
  listener_ = std::move(listener);
}

void Scheduler::SetMemoryHook(std::function<bool()> make_room) {
  std::lock_guard lock(mu_);
  make_room_ = std::move(make_room);
}

bool Scheduler::MakeRoom() {
  std::function<bool()> make_room;
  {
    std::lock_guard lock(mu_);
    make_room = make_room_;
  }
  return make_room && make_room();
}

std::unique_ptr<PoolBlock> Scheduler::AllocateWorking(size_t bytes) {
  constexpr int kMostEvictions = 16;
  for (int tries = 0;; ++tries) {
    auto block = std::make_unique<PoolBlock>(bytes);
    if (*block) return block;
    if (tries == kMostEvictions || !MakeRoom()) return nullptr;
  }
}

void Scheduler::SetLiveMaxBatch(int frames) {
  std::lock_guard lock(mu_);
  options_.live_max_batch = std::max(0, frames);
}

int Scheduler::live_max_batch() const {
  std::lock_guard lock(mu_);
  return options_.live_max_batch;
}

void Scheduler::SetListener(SchedulerListener* listener) {
  std::lock_guard lock(mu_);
  accounting_ = listener;
  PublishDepthLocked();
}

SchedulerTotals Scheduler::totals() const {
  std::lock_guard lock(mu_);
  return totals_;
}

// The next model to run: one with live frames unless offline ones have waited `live_burst`
// batches, round robin from the cursor, whose batch is full or whose oldest frame is due.
std::shared_ptr<ScheduledModel> Scheduler::PickLocked(SchedulerClock::time_point now,
                                                      SchedulerClock::time_point* wake) {
  bool any_live = false, any_offline = false;
  for (auto& weak : models_) {
    auto m = weak.lock();
    if (!m || m->running_ >= m->max_runs()) continue;
    any_live = any_live || !m->live_.empty();
    any_offline = any_offline || !m->offline_.empty();
  }
  const bool offline_turn = any_offline && (!any_live || live_streak_ >= options_.live_burst);
  const size_t count = models_.size();
  for (size_t i = 0; i < count; ++i) {
    const size_t at = (cursor_ + i) % count;
    auto m = models_[at].lock();
    if (!m || m->running_ >= m->max_runs()) continue;
    auto& queue = offline_turn ? m->offline_ : m->live_;
    if (queue.empty()) continue;
    const auto due = queue.front().enqueued + m->config().max_delay;
    if (m->queued_ < m->batch_limit() && now < due && !stop_ && !no_waiting_) {
      *wake = std::min(*wake, due);
      continue;
    }
    cursor_ = (at + 1) % count;
    live_streak_ = offline_turn ? 0 : (any_offline ? live_streak_ + 1 : 0);
    return m;
  }
  return nullptr;
}

// Takes up to a batch from the model's queues, live frames first; jobs that gave up are dropped.
void Scheduler::TakeLocked(const std::shared_ptr<ScheduledModel>& model, Batch* batch,
                           std::vector<std::shared_ptr<JobState>>* dropped) {
  const auto now = SchedulerClock::now();
  int64_t rows = 0;
  std::vector<const void*> callers;
  for (auto* queue : {&model->live_, &model->offline_}) {
    // Live frames up to their own cap (their latency), offline ones up to the model's limit.
    const int64_t cap = queue == &model->live_ && options_.live_max_batch > 0
                            ? std::min<int64_t>(model->batch_limit(), options_.live_max_batch)
                            : model->batch_limit();
    while (!queue->empty() && rows < cap) {
      auto& e = queue->front();
      const int64_t take = std::min(e.count, cap - rows);
      const auto origin = static_cast<size_t>(e.job->job.origin);
      if (e.job->GaveUp(now)) {
        if (!e.job->failed) e.job->status = e.job->WhyGaveUp(now);
        e.job->failed = true;
        e.job->rows_left -= e.count;
        model->queued_ -= e.count;
        queued_by_origin_[origin] -= e.count;
        if (e.job->rows_left == 0) dropped->push_back(e.job);
        queue->pop_front();
        continue;
      }
      batch->jobs.push_back(e.job);
      batch->parts.push_back({&e.job->job, e.row, take});
      batch->enqueued.push_back(e.enqueued);
      BatchRecord& r = batch->record;
      r.by_origin[origin] += static_cast<int>(take);
      if (e.job->job.priority == Priority::kLive) r.live += static_cast<int>(take);
      const void* caller = e.job->job.caller;
      if (caller && std::find(callers.begin(), callers.end(), caller) == callers.end()) {
        callers.push_back(caller);
      }
      rows += take;
      model->queued_ -= take;
      queued_by_origin_[origin] -= take;
      e.row += take;
      e.count -= take;
      if (e.count == 0) queue->pop_front();
    }
  }
  PublishDepthLocked();
  batch->model = model;
  batch->record.model = model->config().name;
  batch->record.rows = static_cast<int>(rows);
  batch->record.padded = static_cast<int>(model->fixed_batch() ? model->batch_limit() : rows);
  batch->record.callers = static_cast<int>(callers.size());
}

void Scheduler::WorkerLoop() {
  for (;;) {
    Batch batch;
    std::vector<std::shared_ptr<JobState>> dropped;
    std::function<void(const BatchRecord&)> observer, listener;
    {
      std::unique_lock lock(mu_);
      for (;;) {
        if (stop_) return;
        auto wake = SchedulerClock::time_point::max();
        std::shared_ptr<ScheduledModel> model;
        if (!paused_) model = PickLocked(SchedulerClock::now(), &wake);
        if (model) {
          TakeLocked(model, &batch, &dropped);
          if (batch.parts.empty()) break;  // only dropped jobs: answer them, then look again
          ++model->running_;
          ++in_flight_;
          batch.engine = model->TakeCopyLocked();
          break;
        }
        if (wake == SchedulerClock::time_point::max()) {
          cv_.wait(lock);
        } else {
          cv_.wait_until(lock, wake);
        }
      }
      observer = observer_;
      listener = listener_;
    }
    for (auto& job : dropped) {
      if (job->job.done) job->job.done(job->status);
    }
    if (batch.parts.empty()) continue;
    if (observer) observer(batch.record);
    const auto start = SchedulerClock::now();
    const double cpu_start = ThreadCpuSeconds();
    batch.started = start;
    Status ran = CatchAll("model run", [&] { return Execute(batch); });
    // Out of memory: again while idle avatars can be evicted to make room.
    for (int tries = 0; ran.code() == StatusCode::kResourceExhausted && tries < 16; ++tries) {
      if (!MakeRoom()) break;
      ran = CatchAll("model run", [&] { return Execute(batch); });
    }
    batch.record.seconds = std::chrono::duration<double>(SchedulerClock::now() - start).count();
    batch.cpu_seconds = ThreadCpuSeconds() - cpu_start;
    for (size_t i = 0; i < batch.parts.size(); ++i) {
      const double waited = std::chrono::duration<double>(start - batch.enqueued[i]).count();
      batch.record.waits.emplace_back(waited, batch.parts[i].count);
    }
    if (!ran.ok()) {
      spdlog::warn("batch of {} frames on model '{}' ({}) failed: {}", batch.record.rows,
                   batch.record.model, options_.device, ran.ToString());
    } else {
      (void)CatchAll("batch metrics", [&] {
        Record(batch);
        if (listener) listener(batch.record);
        return Status::Ok();
      });
    }
    Finish(batch, ran);
  }
}

Status Scheduler::Execute(Batch& batch) {
  ScheduledModel& m = *batch.model;
  return RunParts(*batch.engine, m.config(), batch.parts, batch.record.padded)
      .WithContext("model '" + m.config().name + "'");
}

// The batch in its model's accounting and the owner's (the server's metrics), once, whoever
// sent its frames.
void Scheduler::Record(const Batch& batch) {
  if (batch.model->config().on_batch) batch.model->config().on_batch(batch.record);
  SchedulerListener* accounting;
  {
    std::lock_guard lock(mu_);
    accounting = accounting_;
  }
  if (accounting) accounting->OnBatch(batch.record);
}

void Scheduler::Finish(Batch& batch, const Status& status) {
  std::vector<std::shared_ptr<JobState>> finished;
  {
    std::lock_guard lock(mu_);
    --batch.model->running_;
    --in_flight_;
    batch.model->ReleaseCopyLocked(batch.engine);
    ++totals_.batches;
    if (!status.ok()) ++totals_.failed_batches;
    int origins = 0;
    for (size_t o = 0; o < kOriginCount; ++o) {
      totals_.rows_by_origin[o] += batch.record.by_origin[o];
      origins += batch.record.by_origin[o] > 0 ? 1 : 0;
    }
    if (origins > 1) ++totals_.mixed_batches;
    for (size_t i = 0; i < batch.jobs.size(); ++i) {
      JobState& job = *batch.jobs[i];
      if (!status.ok() && !job.failed) {
        job.failed = true;
        job.status = status;
      }
      job.rows_left -= batch.parts[i].count;
      if (JobTimes* times = job.job.times) {
        const double waited =
            std::chrono::duration<double>(batch.started - batch.enqueued[i]).count();
        times->queue_seconds = std::max(times->queue_seconds, waited);
        times->run_seconds = std::max(times->run_seconds, batch.record.seconds);
        times->run_cpu_seconds += batch.cpu_seconds;
      }
      if (job.rows_left == 0) finished.push_back(batch.jobs[i]);
    }
  }
  cv_.notify_all();
  for (auto& job : finished) {
    if (job->job.done) job->job.done(job->failed ? job->status : Status::Ok());
  }
}

}  // namespace lipsync::runtime
