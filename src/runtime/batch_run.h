// One batch of the scheduler through the engine: the parts of several jobs gathered into one set
// of batch buffers (from the host memory pool), padded for a fixed-batch model, run, and each
// part's rows written to its job's output. This is the only place that splits, pads and mixes the
// forms of the callers' frames.
#pragma once

#include <cstdint>
#include <vector>

#include "lipsync/engine.h"
#include "runtime/scheduler.h"

namespace lipsync::runtime {

// Rows [row, row + count) of a job.
struct BatchPart {
  const Job* job = nullptr;
  int64_t row = 0, count = 0;
};

// Checks a job against the model before it is queued (InvalidArgument naming the view).
Status CheckJob(const Engine& engine, const ModelConfig& config, const Job& job);

// Runs the parts as one batch of `padded` rows (their total, or the model's fixed batch; padding
// repeats the last row) and writes every part's output. A single part that needs no padding runs
// on the job's own buffers. Faces of one size go to Engine::RunFrames (converted on the GPU where
// the backend can); a batch that mixes faces with float inputs, or crops with inner faces, builds
// the float input on the host, as the CPU backends do for faces anyway, so every caller's results
// equal a run of its own.
Status RunParts(Engine& engine, const ModelConfig& config, const std::vector<BatchPart>& parts,
                int64_t padded);

}  // namespace lipsync::runtime
