// Helpers shared by the avatar loader and the importers.
#pragma once

#include <string>
#include <vector>

#include "lipsync/avatar.h"
#include "lipsync/status.h"

namespace lipsync::internal {

Result<std::string> ReadTextFile(const std::string& path);
Status WriteTextFile(const std::string& path, const std::string& text);

// The files <prefix><number>.<ext> in `dir` (ext one of `extensions`, any case), ordered by number.
// The numbers must run 0..N-1 once each: a gap or a duplicate is an InvalidArgument naming it.
// `what` names the files in messages ("frame", "landmarks"). Other files are ignored.
Result<std::vector<std::string>> ListNumberedFiles(const std::string& dir,
                                                   const std::string& prefix,
                                                   const std::vector<std::string>& extensions,
                                                   const std::string& what);

// OK when frame `index`, read from `path`, is the avatar's width x height; otherwise an
// InvalidArgument naming the frame, its file and both sizes.
Status CheckFrameSize(const Image& image, int64_t index, const std::string& path, int width,
                      int height);

// The lower-case extension of a path, without the dot ("png").
std::string LowerExtension(const std::string& path);

// A folder built beside its final place and moved there only when complete. The destructor
// removes it unless Commit() succeeded.
class StagingFolder {
 public:
  // `target` must not exist, or be an empty folder.
  static Result<StagingFolder> Create(const std::string& target);
  StagingFolder(StagingFolder&& other) noexcept;
  StagingFolder& operator=(StagingFolder&&) = delete;
  ~StagingFolder();

  const std::string& path() const { return staging_; }
  const std::string& target() const { return target_; }
  Status Commit();

 private:
  StagingFolder(std::string target, std::string staging)
      : target_(std::move(target)), staging_(std::move(staging)) {}
  std::string target_;
  std::string staging_;
  bool committed_ = false;
};

}  // namespace lipsync::internal

namespace lipsync::internal {

// What an importer collected; WriteAvatarFolder() turns it into an avatar folder.
struct AvatarDraft {
  std::string name;
  double fps = 25.0;
  std::string model;                     // UNet ONNX to copy in
  std::string audio_encoder;             // encoder ONNX to copy in
  std::vector<std::string> frame_files;  // images by frame index, or
  std::string frames_video;              // one video holding the frames
  std::vector<CropRect> rects;
  std::string audio_features;  // optional .npy copied in as the avatar's audio features
};

// Checks both models, copies everything into a staging folder, writes avatar.json and
// crop_rects.json, moves the folder to `out_dir` and loads it back.
Result<Avatar> WriteAvatarFolder(const AvatarDraft& draft, const std::string& out_dir);

// The last component of a folder path, also for "dir/" and ".".
std::string FolderName(const std::string& path);

// One model of the Go server's config.yaml (its paths as written there) and the config's
// models_root: InvalidArgument naming the line and column of what is wrong.
struct GoModel {
  std::string model_path, background_dir, source_video, crop_rects_path;
  int64_t num_frames = 0;
};
Result<GoModel> ReadGoModel(const std::string& config_path, const std::string& model_id,
                            std::string* models_root);

// A lipsync server package's face_bounds/<n>.npy: at least four numbers, [xmin, ymin, xmax,
// ymax] (the crop is frame[ymin:ymax, xmin:xmax]); later entries (width, height) are not needed.
Result<CropRect> ReadFaceBounds(const std::string& path);

}  // namespace lipsync::internal
