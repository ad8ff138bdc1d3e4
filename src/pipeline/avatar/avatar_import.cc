// Writing an imported avatar folder, and the SyncTalk_2D dataset importer.
#include <cstdio>
#include <filesystem>

#include "lipsync/avatar.h"
#include "lipsync/engine.h"
#include "lipsync/video.h"
#include "pipeline/avatar/avatar_internal.h"

namespace lipsync {

namespace fs = std::filesystem;

namespace {

EngineOptions CheckingOptions() {
  EngineOptions options;
  options.intra_op_threads = 1;
  options.ort.graph_optimization = GraphOptimization::kBasic;  // only loaded, never run
  return options;
}

Result<int> UnetInputSize(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(auto engine, Engine::Create(path, CheckingOptions()));
  LIPSYNC_ASSIGN_OR_RETURN(UnetInputs roles, FindUnetInputs(engine->info()));
  return roles.size;
}

Status CheckAudioEncoder(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(auto engine, Engine::Create(path, CheckingOptions()));
  return CheckAudioEncoderInfo(engine->info());
}

Status CopyInto(const std::string& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return Internal("cannot copy '" + from + "' to '" + to.string() + "': " + ec.message());
  return Status::Ok();
}

}  // namespace

namespace internal {

std::string FolderName(const std::string& path) {
  fs::path p = fs::absolute(fs::path(path)).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// Decodes every frame (so that a broken one is reported now, by number), checks that all have
// the first one's size, one rectangle per frame and every rectangle inside the frame.
Status CheckDraft(const AvatarDraft& draft) {
  int width = 0, height = 0;
  int64_t count = 0;
  if (!draft.frames_video.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(auto video, VideoReader::Open(draft.frames_video));
    width = video->width();
    height = video->height();
    count = video->frame_count();
    if (count != static_cast<int64_t>(draft.rects.size())) {
      return InvalidArgument("video '" + draft.frames_video + "' has " + std::to_string(count) +
                             " frames and there are " + std::to_string(draft.rects.size()) +
                             " crop rectangles (one per frame)");
    }
    for (int64_t i = 0; i < count; ++i) LIPSYNC_RETURN_IF_ERROR(video->ReadFrame(i).status());
  } else {
    count = static_cast<int64_t>(draft.frame_files.size());
    if (count != static_cast<int64_t>(draft.rects.size())) {
      return InvalidArgument(std::to_string(count) + " frames and " +
                             std::to_string(draft.rects.size()) +
                             " crop rectangles (one per frame)");
    }
    for (int64_t i = 0; i < count; ++i) {
      const std::string& file = draft.frame_files[static_cast<size_t>(i)];
      auto image = LoadImage(file);
      if (!image.ok()) return image.status().WithContext("frame " + std::to_string(i));
      if (i == 0) {
        width = image->width;
        height = image->height;
      } else if (image->width != width || image->height != height) {
        return InvalidArgument("frame " + std::to_string(i) + " ('" + file + "') is " +
                               std::to_string(image->width) + "x" + std::to_string(image->height) +
                               ", frame 0 is " + std::to_string(width) + "x" +
                               std::to_string(height));
      }
    }
  }
  for (size_t i = 0; i < draft.rects.size(); ++i) {
    Status inside = CheckCropRect(draft.rects[i], width, height);
    if (!inside.ok()) return inside.WithContext("crop rectangle " + std::to_string(i));
  }
  return Status::Ok();
}

Result<Avatar> WriteAvatarFolder(const AvatarDraft& draft, const std::string& out_dir) {
  if (draft.rects.empty()) return InvalidArgument("nothing to import: no frames");
  LIPSYNC_ASSIGN_OR_RETURN(const int model_size, UnetInputSize(draft.model));
  LIPSYNC_RETURN_IF_ERROR(CheckAudioEncoder(draft.audio_encoder));
  LIPSYNC_RETURN_IF_ERROR(CheckDraft(draft));
  LIPSYNC_ASSIGN_OR_RETURN(StagingFolder staging, StagingFolder::Create(out_dir));
  const fs::path root(staging.path());

  AvatarManifest m;
  m.name = draft.name;
  m.fps = draft.fps;
  m.model_size = model_size;
  LIPSYNC_RETURN_IF_ERROR(CopyInto(draft.model, root / m.model));
  LIPSYNC_RETURN_IF_ERROR(CopyInto(draft.audio_encoder, root / m.audio_encoder));
  if (!draft.frames_video.empty()) {
    m.frames = "frames." + LowerExtension(draft.frames_video);
    LIPSYNC_RETURN_IF_ERROR(CopyInto(draft.frames_video, root / m.frames));
  } else {
    std::error_code ec;
    fs::create_directory(root / m.frames, ec);
    if (ec) return Internal("cannot create '" + (root / m.frames).string() + "': " + ec.message());
    for (size_t i = 0; i < draft.frame_files.size(); ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "%06zu.", i);
      const std::string file = name + LowerExtension(draft.frame_files[i]);
      LIPSYNC_RETURN_IF_ERROR(CopyInto(draft.frame_files[i], root / m.frames / file));
    }
  }
  if (!draft.audio_features.empty()) {
    m.audio_features = "audio_features.npy";
    LIPSYNC_RETURN_IF_ERROR(CopyInto(draft.audio_features, root / m.audio_features));
  }
  LIPSYNC_RETURN_IF_ERROR(WriteCropRects((root / m.crop_rects).string(), draft.rects));
  LIPSYNC_RETURN_IF_ERROR(WriteAvatarManifest((root / kAvatarManifestName).string(), m));
  // The copy is loaded before it is moved into place, so a bad one never appears there.
  LIPSYNC_RETURN_IF_ERROR(LoadAvatar(staging.path()).status());
  LIPSYNC_RETURN_IF_ERROR(staging.Commit());
  return LoadAvatar(out_dir);
}

}  // namespace internal

Result<Avatar> ImportSyncTalkDataset(const std::string& dataset_dir,
                                     const AvatarImportOptions& options) {
  const std::string where = "dataset '" + dataset_dir + "'";
  std::error_code ec;
  if (!fs::is_directory(dataset_dir, ec)) return NotFound(where + " not found");
  const std::string images_dir = (fs::path(dataset_dir) / "full_body_img").string();
  const std::string lms_dir = (fs::path(dataset_dir) / "landmarks").string();
  auto images = internal::ListNumberedFiles(images_dir, "", {"jpg", "jpeg", "png"}, "frame");
  if (!images.ok()) return images.status().WithContext(where);
  auto landmarks = internal::ListNumberedFiles(lms_dir, "", {"lms"}, "landmarks");
  if (!landmarks.ok()) return landmarks.status().WithContext(where);
  if (images->size() != landmarks->size()) {
    return InvalidArgument(where + ": " + std::to_string(images->size()) +
                           " frames in full_body_img/ but " + std::to_string(landmarks->size()) +
                           " landmark files in landmarks/ (one .lms per frame)");
  }

  internal::AvatarDraft draft;
  draft.name = options.name.empty() ? internal::FolderName(dataset_dir) : options.name;
  draft.fps = options.fps;
  draft.model = options.model;
  draft.audio_encoder = options.audio_encoder;
  draft.frame_files = *images;
  // The rectangles are clipped to frame 0's size; WriteAvatarFolder() checks every frame's.
  auto first = LoadImage((*images)[0]);
  if (!first.ok()) return first.status().WithContext(where + ": frame 0");
  for (size_t i = 0; i < landmarks->size(); ++i) {
    auto points = ReadLandmarks((*landmarks)[i]);
    if (!points.ok()) return points.status().WithContext(where);
    auto rect = CropRectFromLandmarks(*points, first->width, first->height);
    if (!rect.ok()) return rect.status().WithContext(where + ": '" + (*landmarks)[i] + "'");
    draft.rects.push_back(*rect);
  }
  auto avatar = internal::WriteAvatarFolder(draft, options.out_dir);
  if (!avatar.ok()) return avatar.status().WithContext("importing " + where);
  return avatar;
}

}  // namespace lipsync
