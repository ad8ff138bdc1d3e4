// Outputs that appear only when complete: they are written under a hidden name beside their
// final place and renamed at the end.
#pragma once

#include <string>

namespace lipsync::internal {

// "<dir>/.<name>.tmp<pid>-<n>" for "<dir>/<name>": unique within this process and across
// processes, on the same file system as the target (so the final rename is atomic).
std::string HiddenTempPath(const std::string& target);

}  // namespace lipsync::internal
