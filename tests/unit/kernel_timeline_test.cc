// The GPU timeline summary of bench/gpu_kernel_gaps: kernels on two streams overlap, so the busy
// time is the union of their intervals and only the stretches with no kernel count as gaps.
#include "kernel_timeline.h"

#include <gtest/gtest.h>

namespace lipsync::bench {
namespace {

TEST(KernelTimeline, GapsAreTheStretchesWithNoKernel) {
  // Given out of order: [0,10] and [5,20] overlap (two streams), then idle to 30, [30,40],
  // [40,45] back to back, idle to 100, and [100,101].
  const TimelineSummary t = SummarizeTimeline(
      {{30000, 40000}, {0, 10000}, {100000, 101000}, {5000, 20000}, {40000, 45000}});
  EXPECT_EQ(t.kernels, 5);
  EXPECT_DOUBLE_EQ(t.span_us, 101.0);
  EXPECT_DOUBLE_EQ(t.busy_us, 20.0 + 15.0 + 1.0);
  EXPECT_DOUBLE_EQ(t.gaps_us, 10.0 + 55.0);
  EXPECT_DOUBLE_EQ(t.largest_gap_us, 55.0);
}

TEST(KernelTimeline, AKernelInsideAnotherAddsNoTime) {
  const TimelineSummary t = SummarizeTimeline({{0, 50000}, {10000, 20000}, {60000, 70000}});
  EXPECT_EQ(t.kernels, 3);
  EXPECT_DOUBLE_EQ(t.busy_us, 60.0);
  EXPECT_DOUBLE_EQ(t.gaps_us, 10.0);
  EXPECT_DOUBLE_EQ(t.span_us, 70.0);
}

TEST(KernelTimeline, NoKernelsIsAllZero) {
  const TimelineSummary t = SummarizeTimeline({});
  EXPECT_EQ(t.kernels, 0);
  EXPECT_EQ(t.span_us, 0.0);
  EXPECT_EQ(t.gaps_us, 0.0);
}

}  // namespace
}  // namespace lipsync::bench
