// Arena planning: gives every activation buffer an offset so that buffers alive at the same time
// never overlap, reusing the space of buffers whose last reader has run.
#pragma once

#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::graph {

// Fills first_step/last_step of every buffer from plan->steps, then offset, arena_floats and
// naive_floats. Each buffer takes the lowest offset free of the already placed buffers whose
// lifetimes overlap its own; buffers are placed largest first and in order of first use, and the
// smaller of the two arenas is kept.
void PlanBuffers(Plan* plan);

// The most floats per item alive at any one step: a lower bound for any arena plan.
int64_t PeakLiveFloats(const Plan& plan);

// Internal error if two buffers that are alive at the same step overlap in the arena, or a buffer
// lies outside it. Used by tests and as a check after compiling.
Status CheckBufferPlan(const Plan& plan);

}  // namespace lipsync::graph
