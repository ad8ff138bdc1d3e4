// A kernel's output against the reference backend's on the same inputs, the reference rounding
// each step's output as the kernel stores it: float16 within 4 half ulps of each value plus 0.5%
// of the output's RMS, and 0.2% in relative L2; float32 within 1e-4 relative. A value that is not
// finite fails (outputs start as NaN, so an element left unwritten fails). Reports through gtest
// and returns whether it passed.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace lipsync {
namespace test_plans {

inline bool CloseToReference(const std::vector<float>& got, const std::vector<float>& want,
                             bool float16, const std::string& what) {
  double sum_sq = 0.0, diff_sq = 0.0, worst = 0.0;
  for (float w : want) sum_sq += static_cast<double>(w) * w;
  const double rms = std::sqrt(sum_sq / static_cast<double>(want.size()));
  EXPECT_GT(rms, 0.0) << what << ": the reference output is all zeros, the case proves nothing";
  size_t bad = 0, worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << " (not written?)";
      return false;
    }
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    double tolerance = 1e-4 * (std::fabs(want[i]) + rms);
    if (float16) {
      const double a = std::fabs(want[i]);
      const double ulp =
          a < 6.103515625e-05 ? 5.9604644775390625e-08 : std::ldexp(1.0, std::ilogb(a) - 10);
      tolerance = 4 * ulp + 5e-3 * rms;
    }
    diff_sq += d * d;
    if (d > tolerance) ++bad;
    if (d > worst) {
      worst = d;
      worst_at = i;
    }
  }
  const double relative = std::sqrt(diff_sq / sum_sq);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " elements outside tolerance; largest difference " << worst
                     << " at element " << worst_at << " (want " << want[worst_at] << ", RMS " << rms
                     << ")";
  EXPECT_LE(relative, float16 ? 2e-3 : 1e-5) << what << ": relative L2";
  return bad == 0;
}

}  // namespace test_plans
}  // namespace lipsync
