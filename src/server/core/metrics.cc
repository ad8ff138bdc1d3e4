#include "server/core/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace lipsync::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += value;
  ++total_;
}

uint64_t Histogram::count() const {
  std::lock_guard lock(mu_);
  return total_;
}

void Histogram::Render(const std::string& name, std::string* out) const {
  std::lock_guard lock(mu_);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    *out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  *out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, total_);
  *out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum_, name, total_);
}

std::string PrometheusLabel(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  }
  return out;
}

namespace {
std::vector<double> LatencyBounds() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10};
}
}  // namespace

Metrics::Metrics()
    : batch_size_hist_({1, 2, 4, 8, 16, 32, 64}),
      queue_seconds_(LatencyBounds()),
      compute_seconds_(LatencyBounds()) {}

void Metrics::RecordRequest(const std::string& method, const std::string& code) {
  std::lock_guard lock(mu_);
  ++requests_[{method, code}];
}

void Metrics::RecordBatch(int size, double compute_seconds) {
  ++batches_;
  batch_size_hist_.Observe(size);
  compute_seconds_.Observe(compute_seconds);
  std::lock_guard lock(mu_);
  ++batch_sizes_[size];
}

void Metrics::RecordQueueTime(double seconds) { queue_seconds_.Observe(seconds); }

void Metrics::OnBatch(const runtime::BatchRecord& r) {
  RecordBatch(r.rows, r.seconds);
  AddFrames(r.rows);
  for (int o = 0; o < runtime::kOriginCount; ++o) {
    const int frames = r.by_origin[static_cast<size_t>(o)];
    if (frames > 0) {
      AddModelFrames(r.model, runtime::OriginName(static_cast<runtime::Origin>(o)), frames);
    }
  }
  for (const auto& [waited, frames] : r.waits) {
    for (int64_t k = 0; k < frames; ++k) RecordQueueTime(waited);
  }
}

void Metrics::AddModelFrames(const std::string& model, const std::string& origin, int n) {
  std::lock_guard lock(mu_);
  model_frames_[{model, origin}] += static_cast<uint64_t>(n);
}

uint64_t Metrics::model_frames(const std::string& model, const std::string& origin) const {
  std::lock_guard lock(mu_);
  auto it = model_frames_.find({model, origin});
  return it == model_frames_.end() ? 0 : it->second;
}

uint64_t Metrics::batches_of_size(int size) const {
  std::lock_guard lock(mu_);
  auto it = batch_sizes_.find(size);
  return it == batch_sizes_.end() ? 0 : it->second;
}

void Metrics::RecordSessionBatch(int size, int sessions) {
  session_batch_hist_.Observe(size);
  session_batch_sessions_hist_.Observe(sessions);
  std::lock_guard lock(mu_);
  ++session_batch_sizes_[size];
  ++session_batch_sessions_[sessions];
}

uint64_t Metrics::session_batches_of_size(int size) const {
  std::lock_guard lock(mu_);
  auto it = session_batch_sizes_.find(size);
  return it == session_batch_sizes_.end() ? 0 : it->second;
}

uint64_t Metrics::session_batches_with_sessions(int sessions) const {
  std::lock_guard lock(mu_);
  auto it = session_batch_sessions_.find(sessions);
  return it == session_batch_sessions_.end() ? 0 : it->second;
}

uint64_t Metrics::requests(const std::string& method, const std::string& code) const {
  std::lock_guard lock(mu_);
  auto it = requests_.find({method, code});
  return it == requests_.end() ? 0 : it->second;
}

void Metrics::AddCollector(std::function<void(std::string*)> collector) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string Metrics::RenderPrometheus() const {
  std::string out;
  out += "# HELP lipsync_requests_total Requests answered, by method and status code.\n";
  out += "# TYPE lipsync_requests_total counter\n";
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, n] : requests_) {
      out += fmt::format("lipsync_requests_total{{method=\"{}\",code=\"{}\"}} {}\n", key.first,
                         key.second, n);
    }
  }
  out += "# HELP lipsync_frames_total Frames run through the model.\n";
  out += "# TYPE lipsync_frames_total counter\n";
  out += fmt::format("lipsync_frames_total {}\n", frames_.load());
  out +=
      "# HELP lipsync_model_frames_total Frames run, by model and the protocol that sent them.\n";
  out += "# TYPE lipsync_model_frames_total counter\n";
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, n] : model_frames_) {
      out += fmt::format("lipsync_model_frames_total{{model=\"{}\",origin=\"{}\"}} {}\n",
                         PrometheusLabel(key.first), key.second, n);
    }
  }
  out += "# HELP lipsync_batches_total Batches run through the model.\n";
  out += "# TYPE lipsync_batches_total counter\n";
  out += fmt::format("lipsync_batches_total {}\n", batches_.load());
  out += "# HELP lipsync_batch_size Frames per batch.\n# TYPE lipsync_batch_size histogram\n";
  batch_size_hist_.Render("lipsync_batch_size", &out);
  out += "# HELP lipsync_queue_seconds Time a frame waited for its batch.\n";
  out += "# TYPE lipsync_queue_seconds histogram\n";
  queue_seconds_.Render("lipsync_queue_seconds", &out);
  out += "# HELP lipsync_compute_seconds Time of one batch in the model.\n";
  out += "# TYPE lipsync_compute_seconds histogram\n";
  compute_seconds_.Render("lipsync_compute_seconds", &out);
  out += "# HELP lipsync_inflight_requests Requests accepted and not yet answered.\n";
  out += "# TYPE lipsync_inflight_requests gauge\n";
  out += fmt::format("lipsync_inflight_requests {}\n", in_flight_.load());
  out += "# HELP lipsync_queue_depth Frames waiting for a batch.\n";
  out += "# TYPE lipsync_queue_depth gauge\n";
  out += fmt::format("lipsync_queue_depth {}\n", queue_depth_.load());
  out += "# HELP lipsync_preferred_batch Batch size the server forms when enough frames wait.\n";
  out += "# TYPE lipsync_preferred_batch gauge\n";
  out += fmt::format("lipsync_preferred_batch {}\n", preferred_batch_.load());
  out += "# HELP lipsync_sessions_open Live sessions open now.\n";
  out += "# TYPE lipsync_sessions_open gauge\n";
  out += fmt::format("lipsync_sessions_open {}\n", sessions_open_.load());
  out += "# HELP lipsync_session_frames_sent_total Frames sent to live sessions.\n";
  out += "# TYPE lipsync_session_frames_sent_total counter\n";
  out += fmt::format("lipsync_session_frames_sent_total {}\n", session_frames_sent_.load());
  out +=
      "# HELP lipsync_memory_idle_trimmed 1 while the server is idle and has given its cached "
      "memory back to the system.\n";
  out += "# TYPE lipsync_memory_idle_trimmed gauge\n";
  out += fmt::format("lipsync_memory_idle_trimmed {}\n", idle_trimmed_.load());
  out += "# HELP lipsync_session_batch_size Frames per batch of live sessions' frames.\n";
  out += "# TYPE lipsync_session_batch_size histogram\n";
  session_batch_hist_.Render("lipsync_session_batch_size", &out);
  out += "# HELP lipsync_session_batch_sessions Sessions whose frames shared a batch.\n";
  out += "# TYPE lipsync_session_batch_sessions histogram\n";
  session_batch_sessions_hist_.Render("lipsync_session_batch_sessions", &out);
  std::vector<std::function<void(std::string*)>> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  for (const auto& collect : collectors) collect(&out);
  return out;
}

}  // namespace lipsync::server
