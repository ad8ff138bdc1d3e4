// Plain fp32 CPU implementations of every plan step (plan.h gives the exact semantics). Written
// for obviousness, not speed: they are the yardstick the fast backends are checked against.
#pragma once

#include <cstdint>

#include "graph/plan.h"

namespace lipsync::reference {

// Runs `step` of `plan` for `batch` items on the arena (laid out as plan.h describes), with at
// most `threads` threads (0: the OpenMP default).
void RunStep(const graph::Plan& plan, const graph::PlanStep& step, int64_t batch, float* arena,
             int threads);

}  // namespace lipsync::reference
