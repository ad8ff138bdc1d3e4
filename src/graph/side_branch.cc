#include "graph/side_branch.h"

#include <algorithm>

#include "graph/buffer_plan.h"

namespace lipsync::graph {
namespace {

struct Branch {
  std::vector<bool> on_side;      // per step
  std::vector<bool> side_buffer;  // per buffer
  size_t join = 0;
  size_t steps = 0;
  int64_t macs = 0;
  std::string why_not;  // empty when usable
};

// The steps that read nothing but `input` and their own results, in plan order.
Branch BranchOf(const Plan& plan, int input) {
  Branch b;
  b.on_side.assign(plan.steps.size(), false);
  b.side_buffer.assign(plan.buffers.size(), false);
  b.side_buffer[input] = true;
  b.join = plan.steps.size();
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const PlanStep& step = plan.steps[s];
    bool all = !step.inputs.empty(), any = false;
    for (int id : step.inputs) {
      all = all && b.side_buffer[id];
      any = any || b.side_buffer[id];
    }
    if (all) {
      b.on_side[s] = true;
      b.side_buffer[step.output] = true;
      ++b.steps;
      b.macs += step.macs;
    } else if (any && b.join == plan.steps.size()) {
      b.join = s;
    }
  }
  if (b.steps == 0) {
    b.why_not = "nothing depends on it alone";
  } else if (b.join == plan.steps.size()) {
    b.why_not = "nothing else reads its result";
  }
  for (size_t s = b.join; s < plan.steps.size() && b.why_not.empty(); ++s) {
    if (b.on_side[s]) b.why_not = "a step of it comes after its result is read";
  }
  for (size_t id = 0; id < plan.buffers.size() && b.why_not.empty(); ++id) {
    if (b.side_buffer[id] && plan.buffers[id].is_output) b.why_not = "it writes a model output";
  }
  return b;
}

// The branch's buffers, first-fit by lifetime among themselves, from the end of the arena on.
void Relocate(Plan* plan, const std::vector<bool>& side_buffer) {
  std::vector<int> ids;
  for (size_t id = 0; id < side_buffer.size(); ++id) {
    if (side_buffer[id]) ids.push_back(static_cast<int>(id));
  }
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) {
    return plan->buffers[a].first_step < plan->buffers[b].first_step;
  });
  const int64_t base = AlignPlanFloats(plan->arena_floats);
  plan->arena_floats = PlaceFirstFit(plan, ids, base);
}

}  // namespace

SideBranch SplitSideBranch(Plan* plan) {
  SideBranch result;
  if (plan->inputs.size() < 2) {
    result.description = "no second stream: the model has one input";
    return result;
  }
  const Branch* best = nullptr;
  std::vector<Branch> branches;
  std::string why_not;
  for (const PlanTensor& in : plan->inputs) {
    branches.push_back(BranchOf(*plan, in.buffer));
    if (!branches.back().why_not.empty()) {
      why_not += (why_not.empty() ? "" : "; ") + in.name + ": " + branches.back().why_not;
    }
  }
  for (size_t k = 0; k < branches.size(); ++k) {
    if (!branches[k].why_not.empty()) continue;
    if (!best || branches[k].macs < best->macs) best = &branches[k];
  }
  if (!best) {
    result.description = "no second stream: no input's branch can run apart (" + why_not + ")";
    return result;
  }
  const int64_t arena_before = plan->arena_floats;
  std::vector<int64_t> offsets_before;
  for (const PlanBuffer& b : plan->buffers) offsets_before.push_back(b.offset);
  Relocate(plan, best->side_buffer);
  if (!CheckBufferPlan(*plan).ok()) {
    for (size_t id = 0; id < plan->buffers.size(); ++id)
      plan->buffers[id].offset = offsets_before[id];
    plan->arena_floats = arena_before;
    result.description = "no second stream: its buffers could not be moved apart";
    return result;
  }
  const size_t input = static_cast<size_t>(best - branches.data());
  size_t first = plan->steps.size(), last = 0;
  for (size_t s = 0; s < plan->steps.size(); ++s) {
    if (!best->on_side[s]) continue;
    first = std::min(first, s);
    last = std::max(last, s);
  }
  result.on_side = best->on_side;
  result.join = best->join;
  result.description = "the " + std::to_string(best->steps) + " steps that depend on input '" +
                       plan->inputs[input].name + "' alone (steps " + std::to_string(first) + "-" +
                       std::to_string(last) + ") run on a second stream, joining at step " +
                       std::to_string(best->join) + "; their buffers take " +
                       std::to_string(plan->arena_floats - arena_before) +
                       " more arena elements per item";
  return result;
}

}  // namespace lipsync::graph
