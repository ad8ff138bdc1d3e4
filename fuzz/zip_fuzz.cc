// Zip archives as clients send them (the Python server's model packages): any bytes unpack
// within the limits and inside their folder, or are refused with a short message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "pipeline/media/zip_extract.h"

namespace fs = std::filesystem;

namespace {

[[noreturn]] void Broken(const std::string& what) { lipsync::fuzz::Broken("ExtractZip", what); }

// Whether `path` is `base` or inside it.
bool Within(const fs::path& path, const fs::path& base) {
  return (path.native() + "/").rfind(base.native() + "/", 0) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The folder sits deep below the archive's, so that an entry climbing up to kDepth levels
  // lands where the check below sees it.
  constexpr int kDepth = 8;
  static const fs::path root = lipsync::fuzz::ScratchPath("zip");
  fs::path folder = root;
  for (int i = 0; i < kDepth; ++i) folder /= std::to_string(i);
  fs::remove_all(root);
  fs::create_directories(folder);
  lipsync::fuzz::WriteBytes((root / "in.zip").string(), data, size);
  lipsync::ZipLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_entries = 64;
  const lipsync::Status status =
      lipsync::internal::ExtractZip((root / "in.zip").string(), folder.string(), limits);
  lipsync::fuzz::CheckRefusal(status, "ExtractZip");
  // Nothing but the archive, the folders down to the output and what is inside it: no entry
  // stepped outside. Inside, no symbolic links, and the files within the limits.
  uintmax_t written = 0, files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    const fs::path& p = entry.path();
    if (p == root / "in.zip" || (p != folder && Within(folder, p))) continue;
    if (!Within(p, folder)) {
      Broken("wrote '" + p.lexically_relative(root).string() + "' outside its folder");
    }
    if (entry.is_symlink()) Broken("made a symbolic link");
    if (entry.is_regular_file()) written += entry.file_size(), ++files;
  }
  if (written > static_cast<uintmax_t>(limits.max_bytes)) {
    Broken("wrote " + std::to_string(written) + " bytes over the limit");
  }
  if (files > static_cast<uintmax_t>(limits.max_entries)) {
    Broken("wrote " + std::to_string(files) + " files, over the limit of entries");
  }
  fs::remove_all(root);
  return 0;
}
