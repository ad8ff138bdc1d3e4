// Latency statistics for benchmarks and load tests.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

namespace lipsync::cli {

struct LatencySummary {
  double min = 0, median = 0, mean = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;
};

// Percentile p (0..100) of sorted samples by linear interpolation between closest ranks (the
// same definition as numpy.percentile's default), so C++ and Python reports agree.
double Percentile(const std::vector<double>& sorted, double p);
LatencySummary Summarize(std::vector<double> samples);
nlohmann::json ToJson(const LatencySummary& s);

// Peak resident set size of this process in MiB.
double PeakRssMiB();

}  // namespace lipsync::cli
