#include "server/core/batcher.h"

#include <algorithm>
#include <cstring>

namespace lipsync::server {
namespace {

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A view of the first `rows` items of a batch tensor.
template <typename View, typename T>
View Prefix(T& tensor, size_t rows) {
  View v{tensor.dtype(), tensor.shape(), tensor.data()};
  v.shape[0] = static_cast<int64_t>(rows);
  return v;
}

}  // namespace

Ticket::Ticket(size_t frames, Clock::time_point deadline, Completion on_complete)
    : frames_(frames),
      deadline_(deadline),
      on_complete_(std::move(on_complete)),
      remaining_(frames) {}

bool Ticket::FrameDone(size_t index, const std::vector<MutableTensorView>& batch_outputs,
                       size_t row, double queue_ms, double compute_ms) {
  std::lock_guard lock(mu_);
  if (remaining_ == 0) return false;
  if (status_.ok()) {
    if (outputs_.empty()) {
      for (const auto& out : batch_outputs) {
        Shape shape = out.shape;
        shape[0] = static_cast<int64_t>(frames_);
        outputs_.push_back(Tensor::Uninitialized(out.dtype, std::move(shape)));
      }
    }
    for (size_t o = 0; o < batch_outputs.size(); ++o) {
      if (batch_outputs[o].data == outputs_[o].data()) continue;  // the engine wrote in place
      const size_t row_bytes = outputs_[o].byte_size() / frames_;
      std::memcpy(static_cast<char*>(outputs_[o].data()) + index * row_bytes,
                  static_cast<const char*>(batch_outputs[o].data) + row * row_bytes, row_bytes);
    }
    max_queue_ms_ = std::max(max_queue_ms_, queue_ms);
    compute_ms_ = std::max(compute_ms_, compute_ms);
  }
  return --remaining_ == 0;
}

bool Ticket::FrameFailed(const Status& status) {
  std::lock_guard lock(mu_);
  if (remaining_ == 0) return false;
  if (status_.ok()) status_ = status;
  return --remaining_ == 0;
}

Batcher::Batcher(Engine* engine, BatcherOptions options, Metrics* metrics)
    : engine_(engine),
      options_(options),
      batch_limit_(options.preferred_batch > 0
                       ? std::min(options.preferred_batch, options.max_batch)
                       : options.max_batch),
      metrics_(metrics) {
  const ModelInfo& info = engine_->info();
  // Two schedulers when the engine overlaps runs: one batch uploads while the other computes.
  const int schedulers = options.schedulers > 0 ? std::min(options.schedulers, 2)
                         : engine_->capabilities().overlapping_runs > 1 ? 2
                                                                        : 1;
  for (int k = 0; k < schedulers; ++k) {
    auto buffers = std::make_unique<Buffers>();
    for (const auto& in : info.inputs) {
      Shape shape = in.shape;
      shape[0] = batch_limit_;
      buffers->inputs.emplace_back(in.dtype, shape);
    }
    auto shapes = engine_->OutputShapes(batch_limit_);
    if (shapes.ok()) {
      for (size_t i = 0; i < shapes->size(); ++i) {
        buffers->outputs.emplace_back(info.outputs[i].dtype, (*shapes)[i]);
      }
    }
    buffers_.push_back(std::move(buffers));
  }
  metrics_->SetPreferredBatch(batch_limit_);
  for (auto& buffers : buffers_) {
    schedulers_.emplace_back([this, b = buffers.get()] { SchedulerLoop(b); });
  }
  completer_ = std::thread([this] { CompletionLoop(); });
}

Batcher::~Batcher() { Shutdown(std::chrono::milliseconds(0)); }

size_t Batcher::queue_depth() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

Status Batcher::Submit(std::shared_ptr<Ticket> ticket, std::vector<BatchItem> items) {
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    if (!accepting_) return Unavailable("the server is shutting down");
    if (queue_.size() + items.size() > options_.max_queue) {
      return ResourceExhausted("the queue is full (" + std::to_string(queue_.size()) + " of " +
                               std::to_string(options_.max_queue) +
                               " frames waiting); retry later");
    }
    for (size_t i = 0; i < items.size(); ++i) {
      queue_.push_back(Queued{ticket, i, std::move(items[i]), now});
    }
    metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
  }
  cv_.notify_one();
  return Status::Ok();
}

void Batcher::Finish(const std::shared_ptr<Ticket>& ticket, bool finished) {
  if (!finished || !ticket->on_complete_) return;
  ticket->on_complete_(*ticket);
  // The callback may hold what holds the ticket (a stream slot does): drop it to break the cycle.
  ticket->on_complete_ = nullptr;
}

void Batcher::Complete(std::vector<std::shared_ptr<Ticket>>& finished) {
  if (finished.empty()) return;
  bool others_waiting;
  {
    std::lock_guard lock(mu_);
    others_waiting = !queue_.empty();
  }
  if (!others_waiting) {
    for (auto& ticket : finished) Finish(ticket, true);
  } else {
    {
      std::lock_guard lock(completion_mu_);
      for (auto& ticket : finished) completions_.push_back(std::move(ticket));
    }
    completion_cv_.notify_one();
  }
  finished.clear();
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

void Batcher::TakeBatch(std::vector<Queued>& batch) {
  const ItemForm form = queue_.front().item.form;
  for (auto it = queue_.begin();
       it != queue_.end() && batch.size() < static_cast<size_t>(batch_limit_);) {
    if (it->item.form == form) {
      batch.push_back(std::move(*it));
      it = queue_.erase(it);
    } else {
      ++it;  // another form: it leads a later batch
    }
  }
}

void Batcher::SchedulerLoop(Buffers* buffers) {
  std::vector<Queued> batch;
  while (true) {
    {
      // One scheduler forms a batch at a time; the other may be running its batch meanwhile.
      std::lock_guard forming(forming_mu_);
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping and drained
      // Give the batch until the oldest frame's delay runs out to fill up.
      const auto fill_deadline = queue_.front().enqueued + options_.max_queue_delay;
      cv_.wait_until(lock, fill_deadline,
                     [&] { return stop_ || queue_.size() >= static_cast<size_t>(batch_limit_); });
      TakeBatch(batch);
      ++running_batches_;
      metrics_->SetQueueDepth(static_cast<int64_t>(queue_.size()));
    }
    RunBatch(batch, *buffers);
    batch.clear();
    {
      std::lock_guard lock(mu_);
      --running_batches_;
    }
    drained_cv_.notify_all();
  }
  drained_cv_.notify_all();
}

Status Batcher::RunFrameBatch(std::vector<Queued*>& live, Buffers& buffers,
                              std::vector<MutableTensorView>& outputs) {
  const size_t n = live.size();
  FaceBatch faces;
  if (n == 1) {
    faces.faces = live[0]->item.inputs[0].view();
    faces.audio = live[0]->item.inputs[1].view();
  } else {
    const Tensor& face = live[0]->item.inputs[0];
    const Tensor& audio = live[0]->item.inputs[1];
    for (auto [one, all] : {std::pair{&face, &buffers.faces}, std::pair{&audio, &buffers.audio}}) {
      if (!all->data()) {
        Shape shape = one->shape();
        shape[0] = batch_limit_;
        *all = Tensor::Uninitialized(one->dtype(), std::move(shape));
      }
    }
    for (int k = 0; k < 2; ++k) {
      Tensor& all = k == 0 ? buffers.faces : buffers.audio;
      const size_t row_bytes = all.byte_size() / batch_limit_;
      for (size_t r = 0; r < n; ++r) {
        std::memcpy(static_cast<char*>(all.data()) + r * row_bytes, live[r]->item.inputs[k].data(),
                    row_bytes);
      }
    }
    faces.faces = Prefix<TensorView>(buffers.faces, n);
    faces.audio = Prefix<TensorView>(buffers.audio, n);
  }
  return engine_->RunFrames(faces, outputs[0]);
}

void Batcher::RunBatch(std::vector<Queued>& batch, Buffers& buffers) {
  const auto start = Clock::now();
  // Drop what nobody waits for any more before it reaches the model.
  std::vector<Queued*> live;
  for (auto& q : batch) {
    Status why;
    if (q.ticket->cancelled()) {
      why = Status(StatusCode::kCancelled, "the request was cancelled");
    } else if (start > q.ticket->deadline()) {
      why = Status(StatusCode::kDeadlineExceeded,
                   "the deadline passed after " +
                       std::to_string(static_cast<int>(MsBetween(q.enqueued, start))) +
                       " ms in the queue, before the frame ran");
    }
    if (why.ok()) {
      live.push_back(&q);
    } else {
      Finish(q.ticket, q.ticket->FrameFailed(why));
    }
  }
  if (live.empty()) return;

  const size_t n = live.size();
  const ItemForm form = live[0]->item.form;
  std::vector<TensorView> inputs;
  if (form == ItemForm::kTensors) {
    if (n == 1) {  // one frame: its own buffers are already a batch of one
      for (const auto& t : live[0]->item.inputs) inputs.push_back(t.view());
    } else {
      for (size_t i = 0; i < buffers.inputs.size(); ++i) {
        Tensor& all = buffers.inputs[i];
        const size_t row_bytes = all.byte_size() / batch_limit_;
        for (size_t r = 0; r < n; ++r) {
          std::memcpy(static_cast<char*>(all.data()) + r * row_bytes,
                      live[r]->item.inputs[i].data(), row_bytes);
        }
        inputs.push_back(Prefix<TensorView>(all, n));
      }
    }
  }
  // The batch's output buffers: the model's outputs, or the frame form's one output.
  std::vector<Tensor*> templates;
  if (form == ItemForm::kTensors) {
    for (auto& t : buffers.outputs) templates.push_back(&t);
  } else {
    const int64_t s = engine_->frame_form().layout.inner_size;
    const bool images = form == ItemForm::kFramesToImages;
    Tensor& t = images ? buffers.images : buffers.planes;
    if (!t.data()) {
      t = images ? Tensor::Uninitialized(DataType::kUInt8, {batch_limit_, s, s, 3})
                 : Tensor::Uninitialized(DataType::kFloat32, {batch_limit_, 3, s, s});
    }
    templates.push_back(&t);
  }
  std::vector<MutableTensorView> outputs;
  Ticket& first = *live[0]->ticket;
  if (n == 1 && first.frames() == 1) {
    // A lone one-frame request: the engine writes straight into the request's own outputs.
    std::lock_guard lock(first.mu_);
    for (Tensor* t : templates) {
      Shape shape = t->shape();
      shape[0] = 1;
      first.outputs_.push_back(Tensor::Uninitialized(t->dtype(), std::move(shape)));
      outputs.push_back(first.outputs_.back().mutable_view());
    }
  } else {
    for (Tensor* t : templates) outputs.push_back(Prefix<MutableTensorView>(*t, n));
  }

  const auto run_start = Clock::now();
  Status status = form == ItemForm::kTensors ? engine_->Run(inputs, outputs)
                                             : RunFrameBatch(live, buffers, outputs);
  const auto run_end = Clock::now();
  const double compute_ms = MsBetween(run_start, run_end);
  metrics_->RecordBatch(static_cast<int>(n), compute_ms / 1000.0);
  metrics_->AddFrames(static_cast<int>(n));
  // Outputs are copied out of the batch buffers here, before the next batch reuses them; only the
  // completions may run elsewhere.
  std::vector<std::shared_ptr<Ticket>> finished;
  for (size_t r = 0; r < n; ++r) {
    Queued& q = *live[r];
    const double queue_ms = MsBetween(q.enqueued, run_start);
    metrics_->RecordQueueTime(queue_ms / 1000.0);
    const bool done = status.ok() ? q.ticket->FrameDone(q.index, outputs, r, queue_ms, compute_ms)
                                  : q.ticket->FrameFailed(status.WithContext("inference failed"));
    if (done) finished.push_back(q.ticket);
  }
  Complete(finished);
}

void Batcher::Shutdown(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  accepting_ = false;
  drained_cv_.wait_for(lock, timeout, [&] { return queue_.empty() && running_batches_ == 0; });
  // Whatever is still queued after the drain timeout fails rather than hangs.
  std::deque<Queued> rest;
  rest.swap(queue_);
  stop_ = true;
  lock.unlock();
  cv_.notify_all();
  for (auto& q : rest) {
    Finish(q.ticket,
           q.ticket->FrameFailed(Unavailable("the server shut down before this frame ran")));
  }
  for (auto& scheduler : schedulers_) {
    if (scheduler.joinable()) scheduler.join();
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
