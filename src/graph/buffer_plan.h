// Arena planning: gives every activation buffer an offset so that buffers alive at the same time
// never overlap, reusing the space of buffers whose last reader has run.
#pragma once

#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::graph {

// Steps [first, last] that a backend may run as one kernel: every buffer they read that is made
// before `first` stays alive to `last`, so nothing they write shares its memory.
struct StepSpan {
  size_t first = 0, last = 0;
};

// Fills first_step/last_step of every buffer from plan->steps (extended for `together`), then
// offset, arena_floats and naive_floats. Each buffer takes the lowest offset free of the already
// placed buffers whose lifetimes overlap its own; buffers are placed largest first and in order
// of first use, and the smaller of the two arenas is kept.
void PlanBuffers(Plan* plan, const std::vector<StepSpan>& together = {});

// Places the buffers `ids`, in that order, each at the lowest offset from `base` on that is free
// of the buffers placed before it in this call whose lifetimes overlap its own (first fit).
// Returns the end of the highest placed buffer (aligned), or `base` when `ids` is empty.
int64_t PlaceFirstFit(Plan* plan, const std::vector<int>& ids, int64_t base);

// `n` floats rounded up to the arena's alignment.
int64_t AlignPlanFloats(int64_t n);

// The most floats per item alive at any one step: a lower bound for any arena plan.
int64_t PeakLiveFloats(const Plan& plan);

// Internal error if two buffers that are alive at the same step overlap in the arena, or a buffer
// lies outside it. Used by tests and as a check after compiling.
Status CheckBufferPlan(const Plan& plan);

}  // namespace lipsync::graph
