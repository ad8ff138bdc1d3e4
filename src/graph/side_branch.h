// A branch of the plan that depends on one model input only (the UNet's audio branch, which
// nothing reads until its result is concatenated with the visual encoder's), so that it can run on
// a second stream beside the steps before that point. The plan's arena shares memory between
// buffers whose lifetimes do not overlap in step order; running two branches at once breaks that
// order, so the branch's buffers move to a region of the arena of their own.
#pragma once

#include <string>
#include <vector>

#include "graph/plan.h"

namespace lipsync::graph {

struct SideBranch {
  std::vector<bool> on_side;  // per step; empty when there is no usable branch
  size_t join = 0;            // the first step that reads the branch's result (main stream)
  std::string description;    // what runs beside the rest, or why nothing does

  bool usable() const { return !on_side.empty(); }
};

// Finds the smaller of the branches that depend on one input only and end before the first step
// that reads them together with the rest, and moves that branch's buffers (its input's too) into
// their own region at the end of `plan`'s arena (arena_floats grows by their peak). Leaves the
// plan unchanged and says why when there is none.
SideBranch SplitSideBranch(Plan* plan);

}  // namespace lipsync::graph
