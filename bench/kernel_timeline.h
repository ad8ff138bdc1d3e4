// What a GPU timeline of one forward pass says: how many kernels ran, the time from the first
// one's start to the last one's end (the span), how much of it some kernel was running (busy: the
// union of the kernels' intervals, as kernels on two streams overlap), and the idle time between
// them (the gaps: span - busy), with the largest single gap.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace lipsync::bench {

struct KernelInterval {
  uint64_t start_ns = 0, end_ns = 0;
};

struct TimelineSummary {
  int kernels = 0;
  double span_us = 0, busy_us = 0, gaps_us = 0, largest_gap_us = 0;
};

inline TimelineSummary SummarizeTimeline(std::vector<KernelInterval> kernels) {
  TimelineSummary s;
  s.kernels = static_cast<int>(kernels.size());
  if (kernels.empty()) return s;
  std::sort(kernels.begin(), kernels.end(), [](const KernelInterval& a, const KernelInterval& b) {
    return a.start_ns < b.start_ns;
  });
  uint64_t busy = 0, largest_gap = 0;
  uint64_t run_start = kernels[0].start_ns, run_end = kernels[0].end_ns;
  for (size_t i = 1; i < kernels.size(); ++i) {
    const KernelInterval& k = kernels[i];
    if (k.start_ns > run_end) {  // an idle stretch: close the busy run before it
      busy += run_end - run_start;
      largest_gap = std::max(largest_gap, k.start_ns - run_end);
      run_start = k.start_ns;
      run_end = k.end_ns;
    } else {
      run_end = std::max(run_end, k.end_ns);
    }
  }
  busy += run_end - run_start;
  const uint64_t span = run_end - kernels[0].start_ns;
  s.span_us = static_cast<double>(span) / 1e3;
  s.busy_us = static_cast<double>(busy) / 1e3;
  s.gaps_us = static_cast<double>(span - busy) / 1e3;
  s.largest_gap_us = static_cast<double>(largest_gap) / 1e3;
  return s;
}

}  // namespace lipsync::bench
