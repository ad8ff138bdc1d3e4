// Choosing the batch size the server aims for. A GPU runs a batch of 8 in far less than 8 times
// the time of one frame, so the server should group requests; two CPU cores already busy with one
// frame gain nothing from batches and lose to their bigger working set. Rather than leave that to
// guesswork, the server can time the engine at start-up and aim for the most efficient size.
#pragma once

#include <functional>
#include <vector>

#include "lipsync/engine.h"

namespace lipsync::server {

struct BatchTiming {
  int batch = 0;
  double ms_per_frame = 0;  // median of the timed runs, divided by the batch
};

struct BatchTuning {
  int preferred_batch = 1;
  std::vector<BatchTiming> timings;  // in the order measured
};

struct BatchTuningOptions {
  int max_batch = 8;
  int warmup_runs = 1;
  int timed_runs = 3;
  // The smallest batch whose time per frame is within this fraction of the best one wins: a
  // smaller batch waits less to fill and answers sooner for (nearly) the same throughput.
  double tolerance = 0.05;
};

// Times Engine::Run on constant inputs at batch 1, 2, 4, ... and max_batch. `progress`, when set,
// is called after each size.
Result<BatchTuning> TunePreferredBatch(
    Engine& engine, const BatchTuningOptions& options,
    const std::function<void(const BatchTiming&)>& progress = {});

}  // namespace lipsync::server
