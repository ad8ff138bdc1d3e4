// The Python lipsync server's model packages as avatars: video.mp4 becomes the frames,
// face_bounds/<n>.npy the crop rectangles, aud_ave.npy the precomputed audio features, and the
// UNet checkpoint in models/ is exported to ONNX.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/platform.h"
#include "lipsync/audio.h"
#include "lipsync/avatar.h"
#include "lipsync/npy.h"
#include "lipsync/video.h"
#include "pipeline/avatar/avatar_internal.h"
#include "pipeline/media/output_files.h"
#include "pipeline/media/zip_extract.h"

namespace lipsync {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRequiredFiles[] = {"package_info.json", "aud_ave.npy",
                                          "face_regions_320.mp4", "masked_regions_320.mp4",
                                          "video.mp4"};

// The checkpoints in models/, the one with the largest number in its name first (SyncTalk_2D
// names them by epoch), then by name.
std::vector<std::string> Checkpoints(const fs::path& dir) {
  std::vector<std::pair<long long, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec) || internal::LowerExtension(entry.path().string()) != "pth") {
      continue;
    }
    const std::string stem = entry.path().stem().string();
    char* end = nullptr;
    long long number = std::strtoll(stem.c_str(), &end, 10);
    if (stem.empty() || *end != '\0') number = -1;
    found.emplace_back(number, entry.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& [number, path] : found) out.push_back(path);
  return out;
}

Status CheckCropVideo(const std::string& path, int64_t frames) {
  auto video = VideoReader::Open(path);
  if (!video.ok()) return video.status();
  if ((*video)->frame_count() != frames) {
    return InvalidArgument("'" + path + "' has " + std::to_string((*video)->frame_count()) +
                           " frames; face_bounds/ has " + std::to_string(frames) +
                           " (one per frame id)");
  }
  return Status::Ok();
}

// Files a package must hold, each one missing named.
Status CheckPackageFiles(const fs::path& dir, bool need_checkpoint) {
  std::vector<std::string> missing;
  std::error_code ec;
  for (const char* name : kRequiredFiles) {
    if (!fs::is_regular_file(dir / name, ec)) missing.push_back(name);
  }
  if (need_checkpoint && Checkpoints(dir / "models").empty()) missing.push_back("models/*.pth");
  if (!fs::is_directory(dir / "face_bounds", ec)) missing.push_back("face_bounds/");
  if (missing.empty()) return Status::Ok();
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  return NotFound("missing " + list);
}

// A temporary folder, removed at destruction: for the exported UNet in the temp folder, or
// `path` (created here) for an unpacked package.
class TempDir {
 public:
  TempDir() {
    auto made = platform::MakeTempFolder("lipsync_import_");
    if (made.ok()) path_ = *made;
  }
  explicit TempDir(const std::string& path) {
    std::error_code ec;
    if (fs::create_directory(path, ec) && !ec) path_ = path;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The folder of an unpacked package: its top, or its one folder when the files are in one.
fs::path PackageRoot(const fs::path& unpacked) {
  std::error_code ec;
  if (fs::exists(unpacked / "package_info.json", ec)) return unpacked;
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(unpacked, ec)) {
    if (entry.is_directory(ec) && entry.path().filename() != "__MACOSX") {
      folders.push_back(entry.path());
    }
  }
  return folders.size() == 1 ? folders[0] : unpacked;
}

Result<Avatar> ImportPackageFolder(const std::string& package_dir, const std::string& where,
                                   const AvatarImportOptions& options,
                                   const CheckpointExportOptions& export_options) {
  const fs::path dir(package_dir);
  Status files = CheckPackageFiles(dir, options.model.empty());
  if (!files.ok()) return files.WithContext(where);

  auto info = internal::ReadTextFile((dir / "package_info.json").string());
  if (!info.ok()) return info.status().WithContext(where);
  const auto parsed = nlohmann::json::parse(*info, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return InvalidArgument(where + ": package_info.json is not a JSON object");
  }
  const std::string features = (dir / "aud_ave.npy").string();
  Status checked = LoadFeatureSequence(features).status();
  if (!checked.ok()) return checked.WithContext(where);

  internal::AvatarDraft draft;
  draft.name = options.name.empty() ? internal::FolderName(package_dir) : options.name;
  draft.fps = options.fps;
  draft.audio_encoder = options.audio_encoder;
  draft.audio_features = features;
  draft.frames_video = (dir / "video.mp4").string();
  auto bounds =
      internal::ListNumberedFiles((dir / "face_bounds").string(), "", {"npy"}, "face bounds");
  if (!bounds.ok()) return bounds.status().WithContext(where);
  for (const auto& file : *bounds) {
    auto rect = internal::ReadFaceBounds(file);
    if (!rect.ok()) return rect.status().WithContext(where);
    draft.rects.push_back(*rect);
  }
  const auto frames = static_cast<int64_t>(draft.rects.size());
  for (const char* crops : {"face_regions_320.mp4", "masked_regions_320.mp4"}) {
    Status video = CheckCropVideo((dir / crops).string(), frames);
    if (!video.ok()) return video.WithContext(where);
  }

  if (options.audio_encoder.empty()) {
    return InvalidArgument(where +
                           ": no audio encoder was given for the avatar (a package has none)");
  }
  TempDir temp;
  if (options.model.empty()) {
    if (temp.path().empty()) return Internal("cannot create a temporary folder for the export");
    const std::string checkpoint = Checkpoints(dir / "models").front();
    if (!options.export_checkpoint) {
      return FailedPrecondition(where + ": its UNet is the PyTorch checkpoint '" + checkpoint +
                                "', and this program has no checkpoint exporter to make it ONNX");
    }
    draft.model = temp.path() + "/unet.onnx";
    Status exported = options.export_checkpoint(checkpoint, draft.model, export_options);
    if (!exported.ok()) return exported.WithContext(where);
    std::error_code ec;
    if (!fs::is_regular_file(draft.model, ec)) {
      return Internal(where + ": the checkpoint exporter succeeded but wrote no ONNX file");
    }
  } else {
    draft.model = options.model;
  }
  auto avatar = internal::WriteAvatarFolder(draft, options.out_dir);
  if (!avatar.ok()) return avatar.status().WithContext("importing " + where);
  return avatar;
}

}  // namespace

Result<Avatar> ImportLipSyncSrvPackage(const std::string& package,
                                       const AvatarImportOptions& options,
                                       const CheckpointExportOptions& export_options,
                                       const ZipLimits& zip_limits) {
  const std::string where = "package '" + package + "'";
  std::error_code ec;
  if (fs::is_directory(package, ec)) {
    return ImportPackageFolder(package, where, options, export_options);
  }
  if (!fs::is_regular_file(package, ec)) return NotFound(where + " not found");
  if (!internal::LooksLikeZip(package)) {
    return InvalidArgument(where + " is neither a package folder nor a zip archive");
  }
  if (options.out_dir.empty()) return InvalidArgument("no folder to import the package into");
  // Unpacked beside the avatar (same file system, hidden name), removed whatever happens.
  TempDir unpacked(internal::HiddenTempPath(options.out_dir + ".package"));
  if (unpacked.path().empty()) {
    return Unavailable("cannot create a folder beside '" + options.out_dir + "' to unpack " +
                       where + " into");
  }
  Status extracted = internal::ExtractZip(package, unpacked.path(), zip_limits);
  if (!extracted.ok()) return extracted;
  AvatarImportOptions named = options;
  if (named.name.empty()) named.name = fs::path(package).stem().string();
  return ImportPackageFolder(PackageRoot(unpacked.path()).string(), where, named, export_options);
}

namespace internal {

Result<CropRect> ReadFaceBounds(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(Tensor t, LoadNpy(path));
  if (t.element_count() < 4) {
    return InvalidArgument("face bounds '" + path + "' hold " + std::to_string(t.element_count()) +
                           " numbers; expected [xmin, ymin, xmax, ymax, ...]");
  }
  double v[4];
  for (int i = 0; i < 4; ++i) {
    switch (t.dtype()) {
      case DataType::kFloat32:
        v[i] = t.data_as<float>()[i];
        break;
      case DataType::kInt32:
        v[i] = t.data_as<int32_t>()[i];
        break;
      case DataType::kInt64:
        v[i] = static_cast<double>(t.data_as<int64_t>()[i]);
        break;
      case DataType::kUInt8:
        v[i] = t.data_as<uint8_t>()[i];
        break;
      default:
        return InvalidArgument("face bounds '" + path + "' are " + DataTypeName(t.dtype()) +
                               "; expected float32 or integers");
    }
    // Pixel coordinates, so that the conversion to int below is defined.
    constexpr double kMaxCoordinate = 1e7;
    if (!std::isfinite(v[i]) || std::fabs(v[i]) > kMaxCoordinate) {
      return InvalidArgument("face bounds '" + path + "' hold " + std::to_string(v[i]) +
                             ", not a pixel coordinate");
    }
  }
  return CropRect{static_cast<int>(v[0]), static_cast<int>(v[1]), static_cast<int>(v[2]),
                  static_cast<int>(v[3])};
}

}  // namespace internal

}  // namespace lipsync
