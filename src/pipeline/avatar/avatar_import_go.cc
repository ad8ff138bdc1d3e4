// Importing one model of the Go server's config.yaml as an avatar.
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "lipsync/avatar.h"
#include "pipeline/avatar/avatar_internal.h"

namespace lipsync {

namespace fs = std::filesystem;

namespace {

std::string Mark(const YAML::Mark& mark) {
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1);
}

// A scalar string at `key` of `node`, or "" when absent.
Result<std::string> StringAt(const YAML::Node& node, const std::string& key,
                             const std::string& where) {
  const YAML::Node value = node[key];
  if (!value || value.IsNull()) return std::string();
  if (!value.IsScalar()) {
    return InvalidArgument(where + ": '" + key + "' at " + Mark(value.Mark()) +
                           " must be a string");
  }
  return value.as<std::string>();
}

// The ids under `models` for a message: the first few, each shortened, then how many more.
std::string SomeIds(const YAML::Node& models) {
  constexpr int kShown = 8;
  constexpr size_t kLongest = 40;
  std::string ids;
  int count = 0;
  for (const auto& kv : models) {
    if (count++ >= kShown) continue;
    std::string id = kv.first.Scalar();  // empty for a key that is not a scalar
    if (id.size() > kLongest) id = id.substr(0, kLongest - 3) + "...";
    if (!ids.empty()) ids += ", ";
    ids += id;
  }
  if (count > kShown) ids.append(" and ").append(std::to_string(count - kShown)).append(" more");
  return ids;
}

}  // namespace

namespace internal {

Result<GoModel> ReadGoModel(const std::string& config_path, const std::string& model_id,
                            std::string* models_root) {
  const std::string where = "config '" + config_path + "'";
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec)) return NotFound(where + " not found");
  try {
    const YAML::Node root = YAML::LoadFile(config_path);
    if (!root.IsMap()) return InvalidArgument(where + ": expected a YAML mapping at the top");
    LIPSYNC_ASSIGN_OR_RETURN(*models_root, StringAt(root, "models_root", where));
    const YAML::Node models = root["models"];
    if (!models || !models.IsMap()) return InvalidArgument(where + ": no 'models' mapping");
    const YAML::Node entry = models[model_id];
    if (!entry) {
      return NotFound(where + ": no model '" + model_id +
                      "' under 'models' (it has: " + SomeIds(models) + ")");
    }
    if (!entry.IsMap()) {
      return InvalidArgument(where + ": models." + model_id + " at " + Mark(entry.Mark()) +
                             " is not a mapping");
    }
    const std::string here = where + ": models." + model_id;
    GoModel m;
    LIPSYNC_ASSIGN_OR_RETURN(m.model_path, StringAt(entry, "model_path", here));
    LIPSYNC_ASSIGN_OR_RETURN(m.background_dir, StringAt(entry, "background_dir", here));
    LIPSYNC_ASSIGN_OR_RETURN(m.source_video, StringAt(entry, "source_video", here));
    LIPSYNC_ASSIGN_OR_RETURN(m.crop_rects_path, StringAt(entry, "crop_rects_path", here));
    if (const YAML::Node n = entry["num_frames"]; n && !n.IsNull()) {
      try {
        m.num_frames = n.as<int64_t>();
      } catch (const YAML::Exception&) {
        return InvalidArgument(here + ".num_frames at " + Mark(n.Mark()) + " is not an integer");
      }
      if (m.num_frames < 0) return InvalidArgument(here + ".num_frames is negative");
    }
    if (m.crop_rects_path.empty()) return InvalidArgument(here + ": 'crop_rects_path' is missing");
    if (m.background_dir.empty() && m.source_video.empty()) {
      return InvalidArgument(here + ": neither 'background_dir' nor 'source_video' is set");
    }
    return m;
  } catch (const YAML::Exception& e) {
    return InvalidArgument(where + " is not valid YAML at " + Mark(e.mark) + ": " + e.msg);
  }
}

}  // namespace internal

Result<Avatar> ImportGoServerModel(const std::string& config_path, const std::string& model_id,
                                   const AvatarImportOptions& options) {
  std::string models_root;
  LIPSYNC_ASSIGN_OR_RETURN(internal::GoModel go,
                           internal::ReadGoModel(config_path, model_id, &models_root));
  const std::string where = "config '" + config_path + "' model '" + model_id + "'";
  // Relative paths: from models_root when set (itself relative to the config's folder).
  fs::path base = fs::path(config_path).parent_path();
  if (!models_root.empty()) base = base / models_root;
  auto resolve = [&](const std::string& p) {
    return p.empty() || fs::path(p).is_absolute() ? p : (base / p).string();
  };
  std::error_code ec;

  internal::AvatarDraft draft;
  draft.name = options.name.empty() ? model_id : options.name;
  draft.fps = options.fps;
  draft.model = options.model.empty() ? resolve(go.model_path) : options.model;
  draft.audio_encoder = options.audio_encoder;
  if (draft.model.empty()) return InvalidArgument(where + ": no model_path and no model given");
  if (!fs::is_regular_file(draft.model, ec)) {
    return NotFound(where + ": model '" + draft.model + "' not found");
  }

  // Frames: the background folder's frame_<n> images, or the source video when it has none.
  int64_t frame_count = 0;
  const std::string backgrounds = resolve(go.background_dir);
  bool have_images = false;
  if (!backgrounds.empty() && fs::is_directory(backgrounds, ec) && !fs::is_empty(backgrounds, ec)) {
    auto files =
        internal::ListNumberedFiles(backgrounds, "frame_", {"png", "jpg", "jpeg"}, "frame");
    if (!files.ok()) return files.status().WithContext(where);
    draft.frame_files = std::move(*files);
    frame_count = static_cast<int64_t>(draft.frame_files.size());
    have_images = true;
  }
  if (!have_images) {
    draft.frames_video = resolve(go.source_video);
    if (draft.frames_video.empty()) {
      return NotFound(where + ": background_dir '" + backgrounds +
                      "' holds no frames and no source_video is set");
    }
    if (!fs::is_regular_file(draft.frames_video, ec)) {
      return NotFound(where + ": source_video '" + draft.frames_video + "' not found");
    }
  }

  const std::string rects_path = resolve(go.crop_rects_path);
  auto rects = ReadCropRects(rects_path);
  if (!rects.ok()) return rects.status().WithContext(where);
  draft.rects = std::move(*rects);
  if (have_images) {
    // num_frames (when set) takes the first num_frames frames and rectangles; otherwise the two
    // counts must agree.
    const int64_t n = go.num_frames > 0 ? go.num_frames : frame_count;
    if (frame_count < n || static_cast<int64_t>(draft.rects.size()) < n ||
        (go.num_frames == 0 && static_cast<int64_t>(draft.rects.size()) != n)) {
      return InvalidArgument(where + ": " + std::to_string(frame_count) + " frames in '" +
                             backgrounds + "' and " + std::to_string(draft.rects.size()) +
                             " rectangles in '" + rects_path + "'" +
                             (go.num_frames ? " for num_frames " + std::to_string(go.num_frames)
                                            : std::string(" (one per frame)")));
    }
    draft.frame_files.resize(static_cast<size_t>(n));
    draft.rects.resize(static_cast<size_t>(n));
  } else if (go.num_frames > 0 && static_cast<int64_t>(draft.rects.size()) != go.num_frames) {
    return InvalidArgument(where + ": " + std::to_string(draft.rects.size()) + " rectangles in '" +
                           rects_path + "' for num_frames " + std::to_string(go.num_frames));
  }
  auto avatar = internal::WriteAvatarFolder(draft, options.out_dir);
  if (!avatar.ok()) return avatar.status().WithContext("importing " + where);
  return avatar;
}

}  // namespace lipsync
