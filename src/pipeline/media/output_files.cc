#include "pipeline/media/output_files.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>

namespace lipsync::internal {

std::string HiddenTempPath(const std::string& target) {
  static std::atomic<int> counter{0};
  const std::filesystem::path t(target);
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about "." + std::string.
  std::string name = ".";
  name += t.filename().string();
  name += ".tmp" + std::to_string(static_cast<long>(getpid())) + "-" + std::to_string(counter++);
  return (t.parent_path() / name).string();
}

}  // namespace lipsync::internal
