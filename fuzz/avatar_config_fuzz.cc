// The avatar server's config: lipsync's own YAML (avatars_root, avatars, go_config, limits,
// preload, frame storage) or the Go server's config.yaml, from the bytes. Opening the catalog
// must either refuse with a short message that is not internal, or list only ids that are safe as
// folder names, with settings in their ranges.
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "server/core/avatar_catalog.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lipsync;
  // A folder of this process's own (the target may run beside other fuzzers), so that a config's
  // relative paths stay inside it.
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d = fuzz::ScratchPath("avatar-config");
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string path = (dir / "avatars.yaml").string();
  fuzz::WriteBytes(path, data, size);
  auto catalog = server::AvatarCatalog::Open(path, "");
  fuzz::CheckRefusal(catalog.status(), "AvatarCatalog::Open");
  if (!catalog.ok()) return 0;
  for (const std::string& id : catalog->Ids()) {
    if (!server::CheckModelId(id).ok()) fuzz::Broken("AvatarCatalog", "lists an unsafe id");
    auto source = catalog->Find(id);
    if (!source.ok()) fuzz::Broken("AvatarCatalog", "lists an id it cannot find");
    fuzz::CheckRefusal(source.status(), "AvatarCatalog::Find");
  }
  const auto& s = catalog->settings();
  if ((s.max_models && *s.max_models < 1) || (s.max_host_bytes && *s.max_host_bytes < 0) ||
      (s.max_gpu_bytes && *s.max_gpu_bytes < 0)) {
    fuzz::Broken("AvatarCatalog", "a setting outside its range");
  }
  return 0;
}
