// Loading an avatar folder and reading its frames on demand.
#include "lipsync/avatar.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

#include "lipsync/video.h"
#include "pipeline/avatar/avatar_internal.h"
#include "pipeline/media/output_files.h"

namespace lipsync {

namespace fs = std::filesystem;

namespace internal {

std::string LowerExtension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  if (!ext.empty() && ext[0] == '.') ext.erase(0, 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

Result<std::vector<std::string>> ListNumberedFiles(const std::string& dir,
                                                   const std::string& prefix,
                                                   const std::vector<std::string>& extensions,
                                                   const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("folder '" + dir + "' not found");
  std::map<int64_t, std::string> by_number;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    const std::string ext = LowerExtension(name);
    if (std::find(extensions.begin(), extensions.end(), ext) == extensions.end()) continue;
    const std::string stem = entry.path().stem().string();
    if (stem.size() <= prefix.size() || stem.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = stem.substr(prefix.size());
    if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    const int64_t n = std::stoll(digits);
    auto [it, added] = by_number.emplace(n, entry.path().string());
    if (!added) {
      return InvalidArgument("folder '" + dir + "': " + what + " " + std::to_string(n) +
                             " appears twice ('" + fs::path(it->second).filename().string() +
                             "' and '" + name + "')");
    }
  }
  if (ec) return Internal("cannot list folder '" + dir + "': " + ec.message());
  if (by_number.empty()) {
    std::string names;
    for (const auto& e : extensions) names += (names.empty() ? "" : "|") + e;
    return InvalidArgument("folder '" + dir + "' holds no " + what + " files (" + prefix + "<n>." +
                           names + ")");
  }
  std::vector<std::string> files;
  files.reserve(by_number.size());
  for (const auto& [n, path] : by_number) {
    if (n != static_cast<int64_t>(files.size())) {
      return InvalidArgument("folder '" + dir + "': " + what + " " + std::to_string(files.size()) +
                             " is missing (numbers must run 0.." +
                             std::to_string(by_number.size() - 1) + "; the next one found is " +
                             std::to_string(n) + ")");
    }
    files.push_back(path);
  }
  return files;
}

Result<StagingFolder> StagingFolder::Create(const std::string& target) {
  std::error_code ec;
  const fs::path t(target);
  if (fs::exists(t, ec) && !(fs::is_directory(t, ec) && fs::is_empty(t, ec))) {
    return InvalidArgument("'" + target + "' already exists and is not an empty folder");
  }
  const fs::path parent = t.parent_path().empty() ? fs::path(".") : t.parent_path();
  if (!fs::is_directory(parent, ec)) {
    return NotFound("folder '" + parent.string() + "' (for '" + target + "') does not exist");
  }
  const fs::path staging = HiddenTempPath((parent / t.filename()).string());
  if (!fs::create_directory(staging, ec) || ec) {
    return InvalidArgument("cannot create a folder in '" + parent.string() +
                           "': " + (ec ? ec.message() : std::string("it exists")));
  }
  return StagingFolder(target, staging.string());
}

StagingFolder::StagingFolder(StagingFolder&& other) noexcept
    : target_(std::move(other.target_)),
      staging_(std::move(other.staging_)),
      committed_(other.committed_) {
  other.staging_.clear();
}

StagingFolder::~StagingFolder() {
  if (!committed_ && !staging_.empty()) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

Status StagingFolder::Commit() {
  std::error_code ec;
  if (fs::is_directory(target_, ec) && fs::is_empty(target_, ec)) fs::remove(target_, ec);
  fs::rename(staging_, target_, ec);
  if (ec) return Internal("cannot move the finished folder to '" + target_ + "': " + ec.message());
  committed_ = true;
  return Status::Ok();
}

Status CheckFrameSize(const Image& image, int64_t index, const std::string& path, int width,
                      int height) {
  if (image.width == width && image.height == height) return Status::Ok();
  return InvalidArgument("frame " + std::to_string(index) + " ('" + path + "') is " +
                         std::to_string(image.width) + "x" + std::to_string(image.height) +
                         ", the avatar's frames are " + std::to_string(width) + "x" +
                         std::to_string(height));
}

}  // namespace internal

namespace {

constexpr const char* kFrameExtensions[] = {"png", "jpg", "jpeg"};

std::vector<std::string> FrameExtensions() {
  return {std::begin(kFrameExtensions), std::end(kFrameExtensions)};
}

class ImageFolderReader : public FrameReader {
 public:
  ImageFolderReader(std::vector<std::string> files, int width, int height)
      : files_(std::move(files)), width_(width), height_(height) {}

  Result<Image> Read(int64_t index) override {
    if (index < 0 || index >= static_cast<int64_t>(files_.size())) {
      return InvalidArgument("frame " + std::to_string(index) + " is out of range (0.." +
                             std::to_string(files_.size() - 1) + ")");
    }
    const std::string& path = files_[static_cast<size_t>(index)];
    auto image = LoadImage(path);
    if (!image.ok()) return image.status().WithContext("frame " + std::to_string(index));
    LIPSYNC_RETURN_IF_ERROR(internal::CheckFrameSize(*image, index, path, width_, height_));
    return image;
  }

 private:
  std::vector<std::string> files_;
  int width_, height_;
};

// Keeps the most recent frames so that a walk that turns back (ping-pong) reads them from memory,
// and on a backward miss decodes a whole run of frames ending at the one asked for in one pass.
class VideoFrameCache : public FrameReader {
 public:
  VideoFrameCache(std::unique_ptr<VideoReader> video, int capacity)
      : video_(std::move(video)), capacity_(std::max(1, capacity)) {}

  Result<Image> Read(int64_t index) override {
    if (auto it = cache_.find(index); it != cache_.end()) return Image(it->second);
    if (index < last_decoded_) {
      // Backward: decode [index - capacity + 1, index] forward from the key frame before it.
      cache_.clear();
      const int64_t first = std::max<int64_t>(0, index - capacity_ + 1);
      for (int64_t i = first; i <= index; ++i) LIPSYNC_RETURN_IF_ERROR(Decode(i));
    } else {
      LIPSYNC_RETURN_IF_ERROR(Decode(index));
      while (static_cast<int>(cache_.size()) > capacity_) cache_.erase(cache_.begin());
    }
    return Image(cache_.at(index));
  }

 private:
  Status Decode(int64_t index) {
    auto frame = video_->ReadFrame(index);
    if (!frame.ok()) return frame.status();
    cache_[index] = std::move(*frame);
    last_decoded_ = index;
    return Status::Ok();
  }

  std::unique_ptr<VideoReader> video_;
  int capacity_;
  std::map<int64_t, Image> cache_;
  int64_t last_decoded_ = -1;
};

}  // namespace

std::string Avatar::Resolve(const std::string& path) const {
  const fs::path p(path);
  return p.is_absolute() ? p.string() : (fs::path(dir_) / p).string();
}
std::string Avatar::model_path() const { return Resolve(manifest_.model); }
std::string Avatar::audio_encoder_path() const { return Resolve(manifest_.audio_encoder); }
std::string Avatar::frames_path() const { return Resolve(manifest_.frames); }
std::string Avatar::audio_features_path() const {
  return manifest_.audio_features.empty() ? std::string() : Resolve(manifest_.audio_features);
}

Result<std::unique_ptr<FrameReader>> Avatar::OpenFrames(const FrameReaderOptions& options) const {
  if (!frames_are_video_) {
    return std::unique_ptr<FrameReader>(new ImageFolderReader(frame_files_, width_, height_));
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto video, VideoReader::Open(frames_path()));
  if (video->frame_count() != frame_count() || video->width() != width_ ||
      video->height() != height_) {
    return FailedPrecondition("video '" + frames_path() + "' changed since the avatar was loaded");
  }
  return std::unique_ptr<FrameReader>(
      new VideoFrameCache(std::move(video), options.video_cache_frames));
}

Result<Avatar> LoadAvatar(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound("avatar folder '" + dir + "' not found");
  Avatar a;
  a.dir_ = dir;
  const std::string where = "avatar '" + dir + "'";
  const std::string manifest_path = (fs::path(dir) / kAvatarManifestName).string();
  auto manifest = ReadAvatarManifest(manifest_path);
  if (!manifest.ok()) return manifest.status().WithContext(where);
  a.manifest_ = std::move(*manifest);

  if (!fs::is_regular_file(a.model_path(), ec)) {
    return NotFound(where + ": model '" + a.model_path() + "' not found");
  }
  if (!fs::is_regular_file(a.audio_encoder_path(), ec)) {
    return NotFound(where + ": audio encoder '" + a.audio_encoder_path() + "' not found");
  }
  if (!a.manifest_.audio_features.empty() && !fs::is_regular_file(a.audio_features_path(), ec)) {
    return NotFound(where + ": audio features '" + a.audio_features_path() + "' not found");
  }
  const std::string frames = a.frames_path();
  int64_t frame_count = 0;
  if (fs::is_directory(frames, ec)) {
    auto files = internal::ListNumberedFiles(frames, "", FrameExtensions(), "frame");
    if (!files.ok()) return files.status().WithContext(where);
    a.frame_files_ = std::move(*files);
    frame_count = static_cast<int64_t>(a.frame_files_.size());
    auto first = LoadImage(a.frame_files_[0]);
    if (!first.ok()) return first.status().WithContext(where + ": frame 0");
    a.width_ = first->width;
    a.height_ = first->height;
  } else if (fs::is_regular_file(frames, ec)) {
    a.frames_are_video_ = true;
    auto video = VideoReader::Open(frames);
    if (!video.ok()) return video.status().WithContext(where);
    frame_count = (*video)->frame_count();
    a.width_ = (*video)->width();
    a.height_ = (*video)->height();
  } else {
    return NotFound(where + ": frames '" + frames + "' not found (a folder of images or a video)");
  }

  const std::string rects_path = a.Resolve(a.manifest_.crop_rects);
  auto rects = ReadCropRects(rects_path);
  if (!rects.ok()) return rects.status().WithContext(where);
  if (static_cast<int64_t>(rects->size()) != frame_count) {
    return InvalidArgument(where + ": '" + rects_path + "' has " + std::to_string(rects->size()) +
                           " rectangles for " + std::to_string(frame_count) +
                           " frames (one per frame)");
  }
  for (size_t i = 0; i < rects->size(); ++i) {
    Status inside = CheckCropRect((*rects)[i], a.width_, a.height_);
    if (!inside.ok()) {
      return inside.WithContext(where + ": '" + rects_path + "' entry " + std::to_string(i));
    }
  }
  a.rects_ = std::move(*rects);
  return a;
}

Status CheckAvatarFrames(const Avatar& avatar,
                         const std::function<void(int64_t, int64_t)>& progress) {
  LIPSYNC_ASSIGN_OR_RETURN(auto reader, avatar.OpenFrames({/*video_cache_frames=*/1}));
  const int64_t n = avatar.frame_count();
  for (int64_t i = 0; i < n; ++i) {
    auto frame = reader->Read(i);
    if (!frame.ok()) return frame.status().WithContext("avatar '" + avatar.dir() + "'");
    if (progress) progress(i + 1, n);
  }
  return Status::Ok();
}

}  // namespace lipsync
