// Where the avatar repository finds its avatars: a folder of avatar folders, lipsync's own YAML
// config, or the Go server's config.yaml (docs/AVATARS.md, "Serving avatars").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lipsync/status.h"
#include "pipeline/stream/frame_store.h"

namespace lipsync::server {

// Model ids name folders and cache entries: nothing that could step outside them, and no longer
// than a folder name may be on common file systems. Errors name the id as `field`, the request's
// own name for it.
constexpr size_t kMaxModelIdBytes = 255;
Status CheckModelId(const std::string& id, const std::string& field = "model_id");

struct AvatarSource {
  enum class Kind { kFolder, kGoModel };
  Kind kind = Kind::kFolder;
  std::string path;           // the avatar folder, or the Go server's config file
  std::string model_id;       // the Go config's models.<model_id>
  std::string audio_encoder;  // Go models: the encoder they are imported with
  std::string problem;        // set when the config's entry for this id is unusable
};

// Settings a YAML config may carry; those absent stay unset.
struct AvatarConfigSettings {
  std::optional<int> max_models;
  std::optional<int64_t> max_host_bytes, max_gpu_bytes;
  std::optional<stream::FrameStorage> frames;
  std::vector<std::string> preload;
  std::string cache_dir;
};

class AvatarCatalog {
 public:
  AvatarCatalog() = default;
  // `root` is a folder of avatar folders or a .yaml/.yml config. `audio_encoder` is used for the
  // Go server's models when the config names none. Errors name the file, line and key.
  static Result<AvatarCatalog> Open(const std::string& root, const std::string& audio_encoder);

  // NotFound for an id the catalog does not have.
  Result<AvatarSource> Find(const std::string& id) const;
  std::vector<std::string> Ids() const;  // sorted
  const AvatarConfigSettings& settings() const { return settings_; }

 private:
  std::string folder_root_;  // scanned when asked: its avatar folders come and go
  std::map<std::string, AvatarSource> listed_;
  AvatarConfigSettings settings_;
};

// The Go model as an avatar folder `cache_dir/<model_id>-<hash of the config's path>` (imported on
// first use; imported again when the config or the audio encoder is newer than the cached folder).
Result<std::string> ImportGoModelToCache(const AvatarSource& source, const std::string& cache_dir);

}  // namespace lipsync::server
