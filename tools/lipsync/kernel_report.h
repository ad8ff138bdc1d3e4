// ModelInfo::kernels (the kernels a backend chose at load) as text and as JSON, for `lipsync info`
// and the GPU benchmark.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "lipsync/engine.h"

namespace lipsync::cli {

// One line per fused group (the variant chosen at each tuning batch, with its time and the
// unfused steps' time), then the variants that were not usable and why, the kernels per forward
// pass and the side stream. Empty when the report is.
std::string KernelReportText(const KernelReport& report);

nlohmann::json KernelReportJson(const KernelReport& report);

}  // namespace lipsync::cli
