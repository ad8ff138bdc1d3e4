// Zip archives as clients send them (the Python server's model packages): any bytes unpack
// within the limits and inside their folder, or are refused with a short message.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_check.h"
#include "pipeline/media/zip_extract.h"

namespace fs = std::filesystem;

namespace {

[[noreturn]] void Broken(const std::string& what) {
  std::fprintf(stderr, "ExtractZip: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path root =
      fs::temp_directory_path() / ("lipsync-fuzz-zip-" + std::to_string(getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "out");
  {
    std::ofstream out(root / "in.zip", std::ios::binary);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  lipsync::ZipLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_entries = 64;
  const lipsync::Status status =
      lipsync::internal::ExtractZip((root / "in.zip").string(), (root / "out").string(), limits);
  lipsync::fuzz::CheckRefusal(status, "ExtractZip");
  // Nothing beside the archive and its folder: no entry stepped outside.
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (name != "in.zip" && name != "out") Broken("wrote '" + name + "' outside its folder");
  }
  uintmax_t written = 0, entries = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root / "out")) {
    if (entry.is_symlink()) Broken("made a symbolic link");
    if (entry.is_regular_file()) written += entry.file_size();
    ++entries;
  }
  if (written > static_cast<uintmax_t>(limits.max_bytes)) {
    Broken("wrote " + std::to_string(written) + " bytes over the limit");
  }
  fs::remove_all(root);
  return 0;
}
