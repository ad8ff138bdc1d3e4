// The CUDA backend's choice among the variants of each fused group (fused_groups.h), made at load
// on the GPU that will run them:
//   1. check: each variant runs the group on random inputs (batch 2) in an arena of its own where
//      every other byte holds a poison pattern; its output must match the unfused steps' within
//      tolerance (float32: 1e-4 relative; float16: 4 half ulps of the value plus 0.5% of the
//      output's RMS per element, 0.2% in aggregate), and its inputs and the guard bytes around
//      every buffer must be untouched. A variant that fails is never used, and the report says why.
//   2. time: each variant that passed runs the group at each tuning batch (1 and the largest up to
//      32 by default), a warm-up and then `reps` timed runs; the median counts, and the first and
//      last item of that batch are checked against the unfused output again.
//   3. choose, per tuning batch, the fastest variant that passed (CudaKernels::kFused: the first
//      fused one that passed, whatever its time).
// A run at batch n uses the choice of the tuning batch nearest to n on a log scale.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/cuda/fused_groups.h"
#include "lipsync/engine.h"

namespace lipsync::cuda {

struct TuneOptions {
  std::vector<int64_t> batches;  // tuning batches, ascending
  int64_t check_batch = 2;
  int reps = 5;
  CudaKernels mode = CudaKernels::kAuto;
};

struct TunedVariant {
  GroupVariant variant;
  std::string status = "ok";                   // "ok", or why it is not used
  std::vector<std::pair<int64_t, double>> ms;  // (batch timed, median ms)
};

struct TunedGroup {
  FusedGroup group;
  std::vector<TunedVariant> variants;  // [0]: unfused
  std::vector<size_t> chosen;          // per tuning batch: index into variants
};

struct KernelSchedule {
  std::vector<int64_t> batches;  // tuning batches
  std::vector<TunedGroup> groups;
  std::vector<int> group_at;  // per plan step: the group that starts there, or -1

  // Which tuning batch a run of `batch` follows.
  size_t BatchClass(int64_t batch) const;
  const GroupVariant& VariantFor(size_t group, int64_t batch) const {
    const TunedGroup& g = groups[group];
    return g.variants[g.chosen[BatchClass(batch)]].variant;
  }
};

// Empty when a variant's output `got` matches the unfused steps' `want` within the tolerance of the
// storage type (above); otherwise a short description of the worst difference.
std::string OutputMismatch(const std::vector<float>& got, const std::vector<float>& want,
                           Storage storage);

// The tuning batches for a backend whose largest batch is `max_batch`: {1, min(max_batch, 32)}.
std::vector<int64_t> TuningBatches(int64_t max_batch);

// Finds, checks and times every group of `plan` on the current device. `weights` are the plan's
// weights on the device in `storage`. kUnfused returns a schedule with no groups. Fails only on
// errors that leave the device unusable (a variant that faults), naming the variant.
Result<KernelSchedule> TuneKernels(const graph::Plan& plan, Storage storage, const void* weights,
                                   const DeviceLimits& limits, const TuneOptions& options);

// The schedule as the engine reports it (ModelInfo::kernels), with the kernels of one forward
// pass at each tuning batch (`fixed_kernels`: the launches outside the groups).
KernelReport MakeKernelReport(const KernelSchedule& schedule, int fixed_kernels);

}  // namespace lipsync::cuda
