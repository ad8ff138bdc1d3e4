#include "graph/buffer_plan.h"

#include <algorithm>
#include <numeric>

namespace lipsync::graph {
namespace {

int64_t AlignUp(int64_t n) { return AlignPlanFloats(n); }

bool InTime(const PlanBuffer& a, const PlanBuffer& b) {
  return a.first_step <= b.last_step && b.first_step <= a.last_step;
}

bool Overlap(const PlanBuffer& a, const PlanBuffer& b) {
  const bool in_time = InTime(a, b);
  const bool in_space =
      a.offset < b.offset + AlignUp(b.size) && b.offset < a.offset + AlignUp(a.size);
  return in_time && in_space;
}

}  // namespace

int64_t AlignPlanFloats(int64_t n) {
  return (n + kPlanAlignFloats - 1) / kPlanAlignFloats * kPlanAlignFloats;
}

int64_t PlaceFirstFit(Plan* plan, const std::vector<int>& ids, int64_t base) {
  int64_t end = base;
  std::vector<int> placed;
  for (int id : ids) {
    PlanBuffer& buf = plan->buffers[id];
    // Buffers already placed whose lifetimes overlap this one's, by offset.
    std::vector<int> conflicts;
    for (int other : placed) {
      if (InTime(plan->buffers[other], buf)) conflicts.push_back(other);
    }
    std::sort(conflicts.begin(), conflicts.end(),
              [&](int a, int b) { return plan->buffers[a].offset < plan->buffers[b].offset; });
    int64_t offset = base;
    for (int other : conflicts) {
      const PlanBuffer& o = plan->buffers[other];
      if (o.offset >= offset + AlignUp(buf.size)) break;  // fits in the gap before `o`
      offset = std::max(offset, o.offset + AlignUp(o.size));
    }
    buf.offset = offset;
    end = std::max(end, offset + AlignUp(buf.size));
    placed.push_back(id);
  }
  return end;
}

void PlanBuffers(Plan* plan, const std::vector<StepSpan>& together) {
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
  for (const StepSpan& span : together) {
    for (size_t s = span.first; s <= span.last && s < plan->steps.size(); ++s) {
      for (int in : plan->steps[s].inputs) {
        PlanBuffer& b = plan->buffers[in];
        if (b.first_step < static_cast<int>(span.first)) {
          b.last_step = std::max(b.last_step, static_cast<int>(span.last));
        }
      }
    }
  }

  plan->naive_floats = 0;
  for (const auto& b : plan->buffers) plan->naive_floats += AlignUp(b.size);

  // Two greedy orders; the plan keeps whichever arena is smaller. By first use follows the
  // program; by size (largest first) usually packs tighter around the big 320x320 tensors.
  std::vector<int> by_time(plan->buffers.size());
  std::iota(by_time.begin(), by_time.end(), 0);
  std::vector<int> by_size = by_time;
  std::stable_sort(by_time.begin(), by_time.end(), [&](int a, int b) {
    return plan->buffers[a].first_step < plan->buffers[b].first_step;
  });
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](int a, int b) { return plan->buffers[a].size > plan->buffers[b].size; });
  std::vector<int64_t> best_offsets;
  int64_t best_arena = -1;
  for (const auto* order : {&by_time, &by_size}) {
    const int64_t arena = PlaceFirstFit(plan, *order, 0);
    if (best_arena < 0 || arena < best_arena) {
      best_arena = arena;
      best_offsets.clear();
      for (const auto& b : plan->buffers) best_offsets.push_back(b.offset);
    }
  }
  for (size_t i = 0; i < plan->buffers.size(); ++i) plan->buffers[i].offset = best_offsets[i];
  plan->arena_floats = best_arena;
}

int64_t PeakLiveFloats(const Plan& plan) {
  int64_t peak = 0;
  for (int s = -1; s <= static_cast<int>(plan.steps.size()); ++s) {
    int64_t live = 0;
    for (const auto& b : plan.buffers) {
      if (b.first_step <= s && s <= b.last_step) live += AlignUp(b.size);
    }
    peak = std::max(peak, live);
  }
  return peak;
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
