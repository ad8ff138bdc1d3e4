#include "server/core/batcher.h"

#include <algorithm>

namespace lipsync::server {
namespace {

// Row `row` of a tensor of [n,...].
MutableTensorView RowOf(Tensor& tensor, size_t row) {
  MutableTensorView v = tensor.mutable_view();
  const size_t bytes = tensor.byte_size() / static_cast<size_t>(v.shape[0]);
  v.shape[0] = 1;
  v.data = static_cast<uint8_t*>(v.data) + row * bytes;
  return v;
}

runtime::ModelConfig ConfigFor(const Engine& engine, const BatcherOptions& o, int batch_limit,
                               std::string name) {
  const FrameFormInfo& form = engine.frame_form();
  runtime::ModelConfig config;
  config.name = std::move(name);
  config.max_batch = batch_limit;
  config.max_delay = o.max_queue_delay;
  config.max_queue = static_cast<int64_t>(o.max_queue);
  config.frame_form = form.supported;
  config.layout = form.layout;
  config.visual_input = static_cast<int>(form.visual_index);
  config.audio_input = static_cast<int>(form.audio_index);
  // Two batches at once when the engine overlaps runs: one uploads while the other computes.
  config.max_runs = o.schedulers > 0                             ? std::min(o.schedulers, 2)
                    : engine.capabilities().overlapping_runs > 1 ? 2
                                                                 : 1;
  return config;
}

// What one frame's job holds on to until it has answered.
struct FrameJob {
  std::shared_ptr<Ticket> ticket;
  std::shared_ptr<BatchItem> item;
  runtime::JobTimes times;
};

}  // namespace

Ticket::Ticket(size_t frames, Clock::time_point deadline, Completion on_complete)
    : frames_(frames),
      deadline_(deadline),
      on_complete_(std::move(on_complete)),
      remaining_(frames) {}

bool Ticket::FrameDone(const runtime::JobTimes& times) {
  std::lock_guard lock(mu_);
  if (remaining_ == 0) return false;
  max_queue_ms_ = std::max(max_queue_ms_, times.queue_seconds * 1000.0);
  compute_ms_ = std::max(compute_ms_, times.run_seconds * 1000.0);
  return --remaining_ == 0;
}

bool Ticket::FrameFailed(const Status& status) {
  std::lock_guard lock(mu_);
  if (remaining_ == 0) return false;
  if (status_.ok()) status_ = status;
  return --remaining_ == 0;
}

Batcher::Batcher(Engine* engine, BatcherOptions options, Metrics* metrics)
    : Batcher(engine, options, metrics,
              std::make_shared<runtime::Scheduler>(runtime::SchedulerOptions{})) {
  scheduler_->SetListener(metrics);
}

Batcher::Batcher(Engine* engine, BatcherOptions options, Metrics* metrics,
                 std::shared_ptr<runtime::Scheduler> scheduler, std::string model_name)
    : engine_(engine),
      options_(options),
      batch_limit_(options.preferred_batch > 0
                       ? std::min(options.preferred_batch, options.max_batch)
                       : options.max_batch),
      scheduler_(std::move(scheduler)) {
  model_ = scheduler_->AddModel(engine_,
                                ConfigFor(*engine_, options_, batch_limit_, std::move(model_name)));
  if (metrics) metrics->SetPreferredBatch(batch_limit_);
  completer_ = std::thread([this] { CompletionLoop(); });
}

Batcher::~Batcher() { Shutdown(std::chrono::milliseconds(0)); }

size_t Batcher::queue_depth() const {
  int64_t rows = 0;
  for (runtime::Origin o : {runtime::Origin::kV1, runtime::Origin::kKServe, runtime::Origin::kTest})
    rows += scheduler_->queued_rows(o);
  return static_cast<size_t>(rows);
}

Result<runtime::Job> Batcher::MakeJob(const std::shared_ptr<Ticket>& ticket, size_t index,
                                      std::shared_ptr<BatchItem> item, runtime::Origin origin) {
  auto frame = std::make_shared<FrameJob>();
  frame->ticket = ticket;
  frame->item = std::move(item);
  const BatchItem& it = *frame->item;
  const runtime::ModelConfig& config = model_->config();
  runtime::Job job;
  if (it.form != ItemForm::kTensors) {  // the face and its audio window
    if (it.inputs.size() != 2) return InvalidArgument("a frame needs a face and an audio window");
    job.visual = it.inputs[0].view();
    job.audio = it.inputs[1].view();
    job.output = RowOf(ticket->outputs_[0], index);
  } else if (config.frame_form) {
    job.visual = it.inputs.at(static_cast<size_t>(config.visual_input)).view();
    job.audio = it.inputs.at(static_cast<size_t>(config.audio_input)).view();
    job.output = RowOf(ticket->outputs_[0], index);
  } else {
    for (const Tensor& t : it.inputs) job.inputs.push_back(t.view());
    for (Tensor& t : ticket->outputs_) job.outputs.push_back(RowOf(t, index));
  }
  job.priority = runtime::Priority::kOffline;
  job.origin = origin;
  job.deadline = ticket->deadline();
  job.cancelled = &ticket->cancelled_;
  job.times = &frame->times;
  FrameJob* raw = frame.get();
  job.done = [this, raw](const Status& status) { FrameFinished(raw->ticket, raw->times, status); };
  job.keep_alive = std::move(frame);
  return job;
}

Status Batcher::Submit(std::shared_ptr<Ticket> ticket, std::vector<BatchItem> items,
                       runtime::Origin origin) {
  if (items.empty()) return InvalidArgument("a request needs at least one frame");
  // The request's outputs, which the scheduler writes row by row.
  const ItemForm form = items.front().form;
  const auto frames = static_cast<int64_t>(items.size());
  ticket->outputs_.clear();
  if (form == ItemForm::kTensors) {
    LIPSYNC_ASSIGN_OR_RETURN(auto shapes, engine_->OutputShapes(frames));
    for (size_t i = 0; i < shapes.size(); ++i) {
      ticket->outputs_.push_back(
          Tensor::Uninitialized(engine_->info().outputs[i].dtype, shapes[i]));
    }
  } else {
    const int64_t s = engine_->frame_form().layout.inner_size;
    ticket->outputs_.push_back(form == ItemForm::kFramesToImages
                                   ? Tensor::Uninitialized(DataType::kUInt8, {frames, s, s, 3})
                                   : Tensor::Uninitialized(DataType::kFloat32, {frames, 3, s, s}));
  }
  std::vector<runtime::Job> jobs;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].form != form) return InvalidArgument("the frames of a request differ in form");
    LIPSYNC_ASSIGN_OR_RETURN(
        runtime::Job job,
        MakeJob(ticket, i, std::make_shared<BatchItem>(std::move(items[i])), origin));
    jobs.push_back(std::move(job));
  }
  {
    std::lock_guard lock(mu_);
    if (!accepting_) return Unavailable("the server is shutting down");
    pending_ += frames;
  }
  Status queued = scheduler_->SubmitAll(model_, std::move(jobs));
  if (!queued.ok()) {
    std::lock_guard lock(mu_);
    pending_ -= frames;
    drained_cv_.notify_all();
  }
  return queued;
}

void Batcher::FrameFinished(const std::shared_ptr<Ticket>& ticket, const runtime::JobTimes& times,
                            const Status& status) {
  bool finished;
  if (status.ok()) {
    finished = ticket->FrameDone(times);
  } else if (status.code() == StatusCode::kDeadlineExceeded) {
    finished = ticket->FrameFailed(
        Status(StatusCode::kDeadlineExceeded, "the deadline passed before the frame ran"));
  } else if (status.code() == StatusCode::kCancelled) {
    finished = ticket->FrameFailed(Status(StatusCode::kCancelled, "the request was cancelled"));
  } else if (status.code() == StatusCode::kUnavailable) {
    finished = ticket->FrameFailed(status);
  } else {
    finished = ticket->FrameFailed(status.WithContext("inference failed"));
  }
  if (finished) Complete(ticket);
  // Last: once pending_ reaches 0, Shutdown may return and the batcher go.
  std::lock_guard lock(mu_);
  --pending_;
  drained_cv_.notify_all();
}

void Batcher::Finish(const std::shared_ptr<Ticket>& ticket, bool finished) {
  if (!finished || !ticket->on_complete_) return;
  ticket->on_complete_(*ticket);
  // The callback may hold what holds the ticket (a stream slot does): drop it to break the cycle.
  ticket->on_complete_ = nullptr;
}

void Batcher::Complete(const std::shared_ptr<Ticket>& ticket) {
  // Frames of anyone waiting on the device: encode elsewhere, so that their batch starts now.
  if (scheduler_->queued_rows() == 0) {
    Finish(ticket, true);
    return;
  }
  {
    std::lock_guard lock(completion_mu_);
    completions_.push_back(ticket);
  }
  completion_cv_.notify_one();
}

void Batcher::CompletionLoop() {
  while (true) {
    std::shared_ptr<Ticket> ticket;
    {
      std::unique_lock lock(completion_mu_);
      completion_cv_.wait(lock, [&] { return completion_stop_ || !completions_.empty(); });
      if (completions_.empty()) return;  // stopping and drained
      ticket = std::move(completions_.front());
      completions_.pop_front();
    }
    Finish(ticket, true);
  }
}

void Batcher::Shutdown(std::chrono::milliseconds timeout) {
  {
    std::unique_lock lock(mu_);
    if (stopped_) return;
    accepting_ = false;
    drained_cv_.wait_for(lock, timeout, [&] { return pending_ == 0; });
  }
  // Whatever is still queued after the drain timeout fails rather than hangs; running batches end.
  scheduler_->Drop(model_, Unavailable("the server shut down before this frame ran"));
  {
    std::unique_lock lock(mu_);
    drained_cv_.wait(lock, [&] { return pending_ == 0; });
    stopped_ = true;
  }
  // Answers handed to the completion thread are still delivered before Shutdown returns.
  {
    std::lock_guard completion_lock(completion_mu_);
    completion_stop_ = true;
  }
  completion_cv_.notify_all();
  if (completer_.joinable()) completer_.join();
}

}  // namespace lipsync::server
