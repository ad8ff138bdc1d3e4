// The graph compiler: ONNX model -> execution Plan (see plan.h).
//
// Shape arithmetic is folded with the model's static C/H/W (the batch stays a run-time parameter),
// BatchNormalization is folded into convs, bias/residual/activation become conv epilogues and
// resize(+pad)+concat becomes one step. Anything outside the supported operator set fails with
// Unimplemented naming the node; the compiler never produces a plan it cannot run exactly.
#pragma once

#include <string>

#include "graph/onnx_import.h"
#include "graph/plan.h"
#include "lipsync/status.h"

namespace lipsync::graph {

Result<Plan> CompilePlan(const OnnxModel& model);
// LoadOnnxModel + CompilePlan.
Result<Plan> CompilePlanFromFile(const std::string& path);

// A human-readable summary: one line per step, fusions, arena vs naive bytes, MACs.
std::string PlanSummary(const Plan& plan, bool list_steps = true);
int64_t PlanMacs(const Plan& plan);  // per item

}  // namespace lipsync::graph
