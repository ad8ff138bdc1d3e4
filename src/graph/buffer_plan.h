// Arena planning: gives every activation buffer an offset so that buffers alive at the same time
// never overlap, reusing the space of buffers whose last reader has run.
#pragma once

#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::graph {

// Fills first_step/last_step of every buffer from plan->steps, then offset, arena_floats and
// naive_floats. Greedy in order of first use: each buffer takes the lowest gap among the buffers
// still alive.
void PlanBuffers(Plan* plan);

// Internal error if two buffers that are alive at the same step overlap in the arena, or a buffer
// lies outside it. Used by tests and as a check after compiling.
Status CheckBufferPlan(const Plan& plan);

}  // namespace lipsync::graph
