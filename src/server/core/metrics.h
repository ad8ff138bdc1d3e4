// Server metrics, rendered in the Prometheus text format.
//
// Frames, batches, queue time (queued on the device's scheduler -> its batch starts running) and
// compute time (the batch's run) are recorded for every batch of the scheduler
// (runtime/scheduler.h), whichever protocol sent its frames: the server makes its Metrics the
// scheduler's listener (Scheduler::SetListener). Request counts are by method and status code.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/scheduler.h"

namespace lipsync::server {

// A Prometheus label value: backslash, quote and newline escaped.
std::string PrometheusLabel(const std::string& value);

// A cumulative histogram with fixed upper bounds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double value);
  // Appends `name_bucket{le=...}`, `name_sum` and `name_count` lines.
  void Render(const std::string& name, std::string* out) const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  uint64_t total_ = 0;
};

class Metrics : public runtime::SchedulerListener {
 public:
  Metrics();

  // The device scheduler's batches (frames, batches, queue and compute time, frames by model and
  // origin) and its queue depth.
  void OnBatch(const runtime::BatchRecord& record) override;
  void OnQueueDepth(int64_t frames) override { SetQueueDepth(frames); }

  void RecordRequest(const std::string& method, const std::string& code);
  void RecordBatch(int size, double compute_seconds);
  void RecordQueueTime(double seconds);
  void AddFrames(int n) { frames_ += n; }
  // Frames of one batch of `model` that came from `origin` ("v1", "session", ...).
  void AddModelFrames(const std::string& model, const std::string& origin, int n);
  uint64_t model_frames(const std::string& model, const std::string& origin) const;
  void AddInFlight(int delta) { in_flight_ += delta; }
  void SetQueueDepth(int64_t depth) { queue_depth_ = depth; }
  void SetPreferredBatch(int64_t size) { preferred_batch_ = size; }

  uint64_t batches() const { return batches_; }
  uint64_t frames() const { return frames_; }
  int64_t in_flight() const { return in_flight_; }
  int64_t queue_depth() const { return queue_depth_; }
  // Number of batches of exactly `size` frames.
  uint64_t batches_of_size(int size) const;
  uint64_t requests(const std::string& method, const std::string& code) const;

  std::string RenderPrometheus() const;
  // More metric families, appended to every rendering (e.g. the avatar repository's).
  void AddCollector(std::function<void(std::string*)> collector);

  // Live sessions (session_service.h): open sessions, their frames and their batches.
  void AddSessions(int delta) { sessions_open_ += delta; }
  // A batch of `size` frames from `sessions` different sessions (its time is in RecordBatch).
  void RecordSessionBatch(int size, int sessions);
  void AddSessionFramesSent(int n) { session_frames_sent_ += n; }
  // Whether the server is idle and has given its cached memory back to the system.
  void SetIdleTrimmed(bool trimmed) { idle_trimmed_ = trimmed ? 1 : 0; }
  int64_t sessions_open() const { return sessions_open_; }
  uint64_t session_batches_of_size(int size) const;
  // Number of batches that held frames of exactly `sessions` sessions.
  uint64_t session_batches_with_sessions(int sessions) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, std::string>, uint64_t> requests_;
  std::map<int, uint64_t> batch_sizes_;
  std::map<std::pair<std::string, std::string>, uint64_t> model_frames_;  // (model, origin)
  std::atomic<uint64_t> frames_{0};
  std::atomic<uint64_t> batches_{0};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> queue_depth_{0};
  std::atomic<int64_t> preferred_batch_{0};
  Histogram batch_size_hist_;
  Histogram queue_seconds_;
  Histogram compute_seconds_;
  // Live sessions.
  std::atomic<int64_t> sessions_open_{0};
  std::atomic<uint64_t> session_frames_sent_{0};
  std::atomic<int> idle_trimmed_{0};
  std::map<int, uint64_t> session_batch_sizes_;  // guarded by mu_
  Histogram session_batch_hist_{{1, 2, 4, 8, 16, 32, 64}};
  std::map<int, uint64_t> session_batch_sessions_;  // guarded by mu_
  Histogram session_batch_sessions_hist_{{1, 2, 4, 8, 16, 32, 64}};
  std::vector<std::function<void(std::string*)>> collectors_;  // guarded by mu_
};

}  // namespace lipsync::server
