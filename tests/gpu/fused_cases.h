// The fused groups the GPU tests run (cuda_fused_test.cc) and the planning tests check without a
// GPU (cuda_plan_test.cc), planned as the CUDA backend plans them (the cases are in
// tests/common/fused_group_cases.h).
#pragma once

#include <gtest/gtest.h>

#include "backends/cuda/fused_groups.h"
#include "fused_group_cases.h"
#include "gpu_test_util.h"

namespace lipsync {
namespace testing_gpu {

using test_plans::FusedCases;
using test_plans::GroupCase;
using test_plans::PointwiseCase;
using test_plans::PointwiseCases;

inline Plan PlannedForFusion(Plan plan) {
  const Status planned = cuda::PlanForFusion(&plan);
  EXPECT_TRUE(planned.ok()) << planned.ToString();
  return plan;
}

inline Plan BuildGroup(const GroupCase& c, PlanBuilder& b) {
  return PlannedForFusion(test_plans::BuildGroupSteps(c, b));
}

inline Plan BuildPointwise(const PointwiseCase& c, PlanBuilder& b) {
  return PlannedForFusion(test_plans::BuildPointwiseSteps(c, b));
}

}  // namespace testing_gpu
}  // namespace lipsync
