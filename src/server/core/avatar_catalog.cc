#include "server/core/avatar_catalog.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "lipsync/avatar.h"

namespace lipsync::server {
namespace fs = std::filesystem;

namespace {

std::string At(const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  return "line " + std::to_string(m.line + 1) + ", column " + std::to_string(m.column + 1);
}

// Readers of one key of a mapping; absent or null keys leave the output untouched.
class KeyReader {
 public:
  KeyReader(const YAML::Node& map, std::string where) : map_(map), where_(std::move(where)) {}

  Status String(const char* key, std::string* out) const {
    const YAML::Node v = map_[key];
    if (!v || v.IsNull()) return Status::Ok();
    if (!v.IsScalar()) return WrongType(key, v, "a string");
    *out = v.Scalar();
    return Status::Ok();
  }
  template <typename Int>
  Status Integer(const char* key, std::optional<Int>* out, Int min) const {
    const YAML::Node v = map_[key];
    if (!v || v.IsNull()) return Status::Ok();
    Int n{};
    if (!v.IsScalar() || !YAML::convert<Int>::decode(v, n)) return WrongType(key, v, "an integer");
    if (n < min) {
      return InvalidArgument(where_ + ": '" + key + "' at " + At(v) + " must be at least " +
                             std::to_string(min));
    }
    *out = n;
    return Status::Ok();
  }
  Status StringList(const char* key, std::vector<std::string>* out) const {
    const YAML::Node v = map_[key];
    if (!v || v.IsNull()) return Status::Ok();
    if (!v.IsSequence()) return WrongType(key, v, "a list of model ids");
    for (const auto& item : v) {
      if (!item.IsScalar()) return WrongType(key, item, "a list of model ids");
      out->push_back(item.Scalar());
    }
    return Status::Ok();
  }

 private:
  Status WrongType(const char* key, const YAML::Node& v, const char* want) const {
    return InvalidArgument(where_ + ": '" + key + "' at " + At(v) + " must be " + want);
  }
  const YAML::Node& map_;
  std::string where_;
};

std::string Resolve(const fs::path& base, const std::string& p) {
  return p.empty() || fs::path(p).is_absolute() ? p : (base / p).lexically_normal().string();
}

bool IsYamlPath(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  return ext == ".yaml" || ext == ".yml";
}

Result<YAML::Node> ReadYaml(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return NotFound("avatar config '" + path + "' not found");
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) {
      return InvalidArgument("avatar config '" + path + "': expected a YAML mapping at the top");
    }
    return root;
  } catch (const YAML::Exception& e) {
    return InvalidArgument("avatar config '" + path + "' is not valid YAML at line " +
                           std::to_string(e.mark.line + 1) + ", column " +
                           std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

// What is wrong with the Go config's entry for one model, or "" (the importer checks the rest).
std::string GoEntryProblem(const YAML::Node& entry, const std::string& where) {
  if (!entry.IsMap()) return where + " at " + At(entry) + " is not a mapping";
  for (const char* key : {"model_path", "background_dir", "source_video", "crop_rects_path"}) {
    const YAML::Node v = entry[key];
    if (v && !v.IsNull() && !v.IsScalar()) {
      return where + "." + key + " at " + At(v) + " must be a string";
    }
  }
  for (const char* key : {"num_frames", "preferred_gpu"}) {
    const YAML::Node v = entry[key];
    int64_t n = 0;
    if (v && !v.IsNull() && (!v.IsScalar() || !YAML::convert<int64_t>::decode(v, n))) {
      return where + "." + key + " at " + At(v) + " must be an integer";
    }
  }
  if (!entry["model_path"] || entry["model_path"].IsNull()) {
    return where + ": 'model_path' is missing";
  }
  if (!entry["crop_rects_path"] || entry["crop_rects_path"].IsNull()) {
    return where + ": 'crop_rects_path' is missing";
  }
  if ((!entry["background_dir"] || entry["background_dir"].IsNull()) &&
      (!entry["source_video"] || entry["source_video"].IsNull())) {
    return where + ": neither 'background_dir' nor 'source_video' is set";
  }
  return "";
}

// The Go server's config.yaml: models.<id>, models_root, max_models; GPU lists and other keys of
// that server are not ours and are ignored. `audio_encoder` (top level) is lipsync's addition.
Status AddGoConfig(const std::string& path, const YAML::Node& root, std::string audio_encoder,
                   std::map<std::string, AvatarSource>* out, AvatarConfigSettings* settings) {
  const std::string where = "avatar config '" + path + "'";
  const KeyReader keys(root, where);
  std::string models_root, encoder;
  LIPSYNC_RETURN_IF_ERROR(keys.String("models_root", &models_root));
  LIPSYNC_RETURN_IF_ERROR(keys.String("audio_encoder", &encoder));
  if (settings) LIPSYNC_RETURN_IF_ERROR(keys.Integer("max_models", &settings->max_models, 1));
  if (!encoder.empty()) audio_encoder = Resolve(fs::path(path).parent_path(), encoder);
  const YAML::Node models = root["models"];
  if (!models || !models.IsMap()) {
    return InvalidArgument(where + ": 'models' must be a mapping of model ids");
  }
  for (const auto& kv : models) {
    const std::string id = kv.first.Scalar();
    AvatarSource source;
    source.kind = AvatarSource::Kind::kGoModel;
    source.path = path;
    source.model_id = id;
    source.audio_encoder = audio_encoder;
    if (Status bad = CheckModelId(id); !bad.ok()) {
      return InvalidArgument(where + ": a model id under 'models' at " + At(kv.first) + ": " +
                             bad.message());
    }
    source.problem = GoEntryProblem(kv.second, where + ": models." + id);
    if (source.problem.empty() && audio_encoder.empty()) {
      source.problem = where + ": models." + id +
                       " needs an audio encoder (audio_encoder in the config, or the server's)";
    }
    (*out)[id] = std::move(source);
  }
  return Status::Ok();
}

Status AddOwnConfig(const std::string& path, const YAML::Node& root,
                    const std::string& audio_encoder, std::string* folder_root,
                    std::map<std::string, AvatarSource>* out, AvatarConfigSettings* settings) {
  const std::string where = "avatar config '" + path + "'";
  static const std::set<std::string> kKeys = {
      "avatars_root",   "avatars",       "go_config", "audio_encoder", "cache_dir",
      "host_memory_mb", "gpu_memory_mb", "preload",   "max_models",    "frame_storage"};
  for (const auto& kv : root) {
    if (!kv.first.IsScalar() || !kKeys.count(kv.first.Scalar())) {
      return InvalidArgument(where + ": unknown key " + Quoted(kv.first.Scalar(), 60) + " at " +
                             At(kv.first));
    }
  }
  const fs::path base = fs::path(path).parent_path();
  const KeyReader keys(root, where);
  std::string avatars_root, go_config, encoder, cache_dir, frame_storage;
  std::optional<int64_t> host_mb, gpu_mb;
  LIPSYNC_RETURN_IF_ERROR(keys.String("avatars_root", &avatars_root));
  LIPSYNC_RETURN_IF_ERROR(keys.String("go_config", &go_config));
  LIPSYNC_RETURN_IF_ERROR(keys.String("audio_encoder", &encoder));
  LIPSYNC_RETURN_IF_ERROR(keys.String("cache_dir", &cache_dir));
  LIPSYNC_RETURN_IF_ERROR(keys.Integer("max_models", &settings->max_models, 1));
  LIPSYNC_RETURN_IF_ERROR(keys.Integer<int64_t>("host_memory_mb", &host_mb, 0));
  LIPSYNC_RETURN_IF_ERROR(keys.Integer<int64_t>("gpu_memory_mb", &gpu_mb, 0));
  LIPSYNC_RETURN_IF_ERROR(keys.StringList("preload", &settings->preload));
  LIPSYNC_RETURN_IF_ERROR(keys.String("frame_storage", &frame_storage));
  if (!frame_storage.empty()) {
    auto storage = stream::ParseFrameStorage(frame_storage);
    if (!storage.ok()) {
      return InvalidArgument(where + ": 'frame_storage' at " + At(root["frame_storage"]) +
                             " must be decoded or encoded, got " + Quoted(frame_storage, 60));
    }
    settings->frames = *storage;
  }
  if (host_mb) settings->max_host_bytes = *host_mb << 20;
  if (gpu_mb) settings->max_gpu_bytes = *gpu_mb << 20;
  settings->cache_dir = Resolve(base, cache_dir);
  *folder_root = Resolve(base, avatars_root);
  const std::string encoder_path = encoder.empty() ? audio_encoder : Resolve(base, encoder);

  if (!go_config.empty()) {
    const std::string go_path = Resolve(base, go_config);
    LIPSYNC_ASSIGN_OR_RETURN(YAML::Node go_root, ReadYaml(go_path));
    LIPSYNC_RETURN_IF_ERROR(AddGoConfig(go_path, go_root, encoder_path, out, nullptr));
  }
  const YAML::Node avatars = root["avatars"];
  if (avatars && !avatars.IsNull()) {
    if (!avatars.IsMap()) {
      return InvalidArgument(where + ": 'avatars' at " + At(avatars) +
                             " must be a mapping of model id to avatar folder");
    }
    for (const auto& kv : avatars) {
      const std::string id = kv.first.Scalar();
      if (Status bad = CheckModelId(id); !bad.ok()) {
        return InvalidArgument(where + ": a model id under 'avatars' at " + At(kv.first) + ": " +
                               bad.message());
      }
      if (!kv.second.IsScalar()) {
        return InvalidArgument(where + ": avatars." + id + " at " + At(kv.second) +
                               " must be the path of an avatar folder");
      }
      AvatarSource source;
      source.path = Resolve(base, kv.second.Scalar());
      (*out)[id] = std::move(source);
    }
  }
  if (folder_root->empty() && out->empty()) {
    return InvalidArgument(where + " names no avatars (avatars, avatars_root or go_config)");
  }
  return Status::Ok();
}

}  // namespace

Status CheckModelId(const std::string& id, const std::string& field) {
  if (id.empty()) return InvalidArgument(field + " is empty");
  if (id.size() > kMaxModelIdBytes) {
    return InvalidArgument(field + " " + Quoted(id, 32) +
                           " is longer than an avatar folder name (" +
                           std::to_string(kMaxModelIdBytes) + " bytes at most)");
  }
  if (id == "." || id == ".." || id.find_first_of(std::string("/\\\0", 3)) != std::string::npos) {
    return InvalidArgument(field + " " + Quoted(id) + " is not an avatar folder name");
  }
  return Status::Ok();
}

Result<AvatarCatalog> AvatarCatalog::Open(const std::string& root,
                                          const std::string& audio_encoder) {
  AvatarCatalog catalog;
  std::error_code ec;
  if (root.empty()) return InvalidArgument("no avatar folder or config given");
  if (fs::is_directory(root, ec)) {
    catalog.folder_root_ = root;
    return catalog;
  }
  if (!IsYamlPath(root)) {
    return NotFound("avatars '" + root + "' is neither a folder nor a .yaml config");
  }
  LIPSYNC_ASSIGN_OR_RETURN(YAML::Node yaml, ReadYaml(root));
  // The Go server's config keeps its avatars under 'models'; ours never has that key.
  if (yaml["models"]) {
    LIPSYNC_RETURN_IF_ERROR(
        AddGoConfig(root, yaml, audio_encoder, &catalog.listed_, &catalog.settings_));
  } else {
    LIPSYNC_RETURN_IF_ERROR(AddOwnConfig(root, yaml, audio_encoder, &catalog.folder_root_,
                                         &catalog.listed_, &catalog.settings_));
  }
  if (!catalog.folder_root_.empty() && !fs::is_directory(catalog.folder_root_, ec)) {
    return NotFound("avatar config '" + root + "': avatars_root '" + catalog.folder_root_ +
                    "' is not a folder");
  }
  return catalog;
}

Result<AvatarSource> AvatarCatalog::Find(const std::string& id) const {
  LIPSYNC_RETURN_IF_ERROR(CheckModelId(id));
  if (auto it = listed_.find(id); it != listed_.end()) return it->second;
  std::error_code ec;
  if (!folder_root_.empty()) {
    const std::string dir = folder_root_ + "/" + id;
    if (fs::is_directory(dir, ec))
      return AvatarSource{AvatarSource::Kind::kFolder, dir, "", "", ""};
    return NotFound("unknown model '" + id + "': no avatar folder '" + dir + "'");
  }
  return NotFound("unknown model '" + id + "': the avatar config does not list it");
}

std::vector<std::string> AvatarCatalog::Ids() const {
  std::set<std::string> ids;
  for (const auto& [id, source] : listed_) ids.insert(id);
  std::error_code ec;
  if (!folder_root_.empty()) {
    for (const auto& entry : fs::directory_iterator(folder_root_, ec)) {
      if (fs::exists(entry.path() / kAvatarManifestName, ec)) {
        ids.insert(entry.path().filename().string());
      }
    }
  }
  return {ids.begin(), ids.end()};
}

Result<std::string> ImportGoModelToCache(const AvatarSource& source, const std::string& cache_dir) {
  // One folder per config and model id: two configs may use the same ids.
  std::error_code ec;
  const std::string config = fs::weakly_canonical(source.path, ec).string();
  const std::string dir =
      (fs::path(cache_dir) / fmt::format("{}-{:08x}", source.model_id,
                                         static_cast<uint32_t>(std::hash<std::string>{}(config))))
          .string();
  const auto newest_input =
      std::max(fs::last_write_time(source.path, ec), fs::last_write_time(source.audio_encoder, ec));
  const fs::path manifest = fs::path(dir) / kAvatarManifestName;
  if (fs::exists(manifest, ec) && fs::last_write_time(manifest, ec) >= newest_input) return dir;
  fs::remove_all(dir, ec);
  fs::create_directories(cache_dir, ec);
  if (ec) return Unavailable("cannot create the avatar cache folder '" + cache_dir + "'");
  AvatarImportOptions options;
  options.out_dir = dir;
  options.audio_encoder = source.audio_encoder;
  auto avatar = ImportGoServerModel(source.path, source.model_id, options);
  if (!avatar.ok()) return avatar.status();
  return dir;
}

}  // namespace lipsync::server
