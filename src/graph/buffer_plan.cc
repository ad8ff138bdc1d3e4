#include "graph/buffer_plan.h"

#include <algorithm>
#include <numeric>

namespace lipsync::graph {
namespace {

int64_t AlignUp(int64_t n) {
  return (n + kPlanAlignFloats - 1) / kPlanAlignFloats * kPlanAlignFloats;
}

bool Overlap(const PlanBuffer& a, const PlanBuffer& b) {
  const bool in_time = a.first_step <= b.last_step && b.first_step <= a.last_step;
  const bool in_space =
      a.offset < b.offset + AlignUp(b.size) && b.offset < a.offset + AlignUp(a.size);
  return in_time && in_space;
}

}  // namespace

void PlanBuffers(Plan* plan) {
  const int end = static_cast<int>(plan->steps.size());
  for (auto& b : plan->buffers) {
    b.size = b.shape.elements();
    b.last_step = b.first_step;
  }
  for (int s = 0; s < end; ++s) {
    const PlanStep& step = plan->steps[s];
    plan->buffers[step.output].first_step = s;
    plan->buffers[step.output].last_step = std::max(plan->buffers[step.output].last_step, s);
    for (int in : step.inputs)
      plan->buffers[in].last_step = std::max(plan->buffers[in].last_step, s);
  }
  for (auto& b : plan->buffers) {
    if (b.is_input) b.first_step = -1;
    if (b.is_output) b.last_step = end;
  }

  std::vector<int> order(plan->buffers.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return plan->buffers[a].first_step < plan->buffers[b].first_step;
  });
  std::vector<int> live;  // buffer ids holding space, kept sorted by offset
  plan->arena_floats = 0;
  plan->naive_floats = 0;
  for (int id : order) {
    PlanBuffer& buf = plan->buffers[id];
    plan->naive_floats += AlignUp(buf.size);
    // Space of buffers whose last reader ran before this buffer is written is free again.
    live.erase(
        std::remove_if(live.begin(), live.end(),
                       [&](int other) { return plan->buffers[other].last_step < buf.first_step; }),
        live.end());
    int64_t offset = 0;
    for (int other : live) {
      const PlanBuffer& o = plan->buffers[other];
      if (o.offset - offset >= AlignUp(buf.size)) break;  // fits in the gap before `o`
      offset = std::max(offset, o.offset + AlignUp(o.size));
    }
    buf.offset = offset;
    plan->arena_floats = std::max(plan->arena_floats, offset + AlignUp(buf.size));
    live.insert(std::upper_bound(live.begin(), live.end(), id,
                                 [&](int a, int b) {
                                   return plan->buffers[a].offset < plan->buffers[b].offset;
                                 }),
                id);
  }
}

Status CheckBufferPlan(const Plan& plan) {
  for (size_t i = 0; i < plan.buffers.size(); ++i) {
    const PlanBuffer& a = plan.buffers[i];
    if (a.offset < 0 || a.offset % kPlanAlignFloats || a.offset + a.size > plan.arena_floats) {
      return Internal("buffer '" + a.name + "' lies outside the arena or is misaligned");
    }
    for (size_t j = i + 1; j < plan.buffers.size(); ++j) {
      if (Overlap(a, plan.buffers[j])) {
        return Internal("buffers '" + a.name + "' and '" + plan.buffers[j].name +
                        "' are alive at the same time and overlap in the arena");
      }
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::graph
