#include "pipeline/media/output_files.h"

#include <atomic>
#include <filesystem>

#include "core/platform.h"

namespace lipsync::internal {

std::string HiddenTempPath(const std::string& target) {
  static std::atomic<int> counter{0};
  const std::filesystem::path t(target);
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about "." + std::string.
  std::string name = ".";
  name += t.filename().string();
  name += ".tmp" + std::to_string(platform::ProcessId()) + "-" + std::to_string(counter++);
  return (t.parent_path() / name).string();
}

}  // namespace lipsync::internal
