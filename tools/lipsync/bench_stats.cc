#include "bench_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/platform.h"

namespace lipsync::cli {

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0.0;
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

LatencySummary Summarize(std::vector<double> samples) {
  LatencySummary s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.min = samples.front();
  s.max = samples.back();
  s.mean = std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size();
  s.median = Percentile(samples, 50);
  s.p90 = Percentile(samples, 90);
  s.p95 = Percentile(samples, 95);
  s.p99 = Percentile(samples, 99);
  return s;
}

nlohmann::json ToJson(const LatencySummary& s) {
  return {{"min", s.min}, {"median", s.median}, {"mean", s.mean}, {"p90", s.p90},
          {"p95", s.p95}, {"p99", s.p99},       {"max", s.max}};
}

double PeakRssMiB() {
  return static_cast<double>(platform::PeakResidentBytes()) / (1024.0 * 1024.0);
}

}  // namespace lipsync::cli
