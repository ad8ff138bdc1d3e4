// Avatars: the frames a lip-synced video is made of, one face rectangle per frame, and the two
// models that animate them, kept together in one folder (docs/AVATARS.md describes the format).
//
//   auto avatar = lipsync::LoadAvatar("avatars/anna");      // reads avatar.json, checks the rest
//   if (!avatar.ok()) { ... avatar.status().message() says what is wrong and where ... }
//   auto frames = avatar->OpenFrames();                      // one reader per thread
//   auto frame = (*frames)->Read(17);                        // decoded on demand, not kept
//   const lipsync::CropRect& rect = avatar->crop_rects()[17];
//
// Frames are decoded when they are read, so memory does not grow with the number of frames.
// Importers turn a SyncTalk_2D dataset or the Go server's configuration into an avatar folder.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/engine.h"
#include "lipsync/face.h"
#include "lipsync/frames.h"
#include "lipsync/status.h"

namespace lipsync {

constexpr const char* kAvatarManifestName = "avatar.json";
constexpr int kAvatarFormatVersion = 1;

// avatar.json. Paths are relative to the avatar folder (absolute ones are used as they are).
struct AvatarManifest {
  std::string name;
  double fps = 25.0;
  int model_size = 320;  // the UNet's input: 320 (SyncTalk_2D) or 160
  std::string model = "unet.onnx";
  std::string audio_encoder = "audio_encoder.onnx";
  std::string frames = "frames";  // a folder of numbered images or one video file
  std::string crop_rects = "crop_rects.json";
  // Optional: precomputed audio features [rows, 512], one row per video frame (the embedding
  // sequence of the model spec, section 2 step 8), e.g. a lipsyncsrv package's aud_ave.npy.
  std::string audio_features;
};

// Reads and checks avatar.json: InvalidArgument naming the file, the line and column of a syntax
// error, or the key with a missing or wrong value.
Result<AvatarManifest> ReadAvatarManifest(const std::string& path);
Status WriteAvatarManifest(const std::string& path, const AvatarManifest& manifest);

// crop_rects.json: a JSON list of [x1, y1, x2, y2] integer lists. Errors name the entry.
Result<std::vector<CropRect>> ReadCropRects(const std::string& path);
Status WriteCropRects(const std::string& path, const std::vector<CropRect>& rects);

// Landmarks of one frame (a SyncTalk_2D .lms file): 110 lines of "x y". Coordinates are read as
// numbers and truncated to integers, as upstream does.
struct LandmarkPoint {
  int x = 0, y = 0;
};
constexpr int kLandmarkCount = 110;
Result<std::vector<LandmarkPoint>> ReadLandmarks(const std::string& path);

// The spec's face square from landmarks (section 3): x from point 1 to point 31, y from point 52
// down by the same width, clipped at the frame's edges. InvalidArgument when no square remains.
Result<CropRect> CropRectFromLandmarks(const std::vector<LandmarkPoint>& points, int width,
                                       int height);

// Reads the frames of one avatar in any order. Not thread-safe: open one reader per thread.
class FrameReader {
 public:
  virtual ~FrameReader() = default;
  // Frame `index` (0-based) as BGR; DataLoss naming the file (and frame) when it does not decode,
  // InvalidArgument when its size differs from the avatar's.
  virtual Result<Image> Read(int64_t index) = 0;
};

struct FrameReaderOptions {
  // Video frames: how many decoded frames a reader keeps so that walking backwards (ping-pong)
  // does not seek and decode from a key frame for every frame. Memory: this many frames.
  int video_cache_frames = 32;
};

class Avatar {
 public:
  const std::string& dir() const { return dir_; }
  const AvatarManifest& manifest() const { return manifest_; }
  // The manifest's paths resolved against the folder.
  std::string model_path() const;
  std::string audio_encoder_path() const;
  std::string frames_path() const;
  std::string audio_features_path() const;  // empty when the avatar has none
  bool frames_are_video() const { return frames_are_video_; }
  int64_t frame_count() const { return static_cast<int64_t>(rects_.size()); }
  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<CropRect>& crop_rects() const { return rects_; }
  // Image files of a folder avatar, by frame index (empty for a video avatar).
  const std::vector<std::string>& frame_files() const { return frame_files_; }

  Result<std::unique_ptr<FrameReader>> OpenFrames(const FrameReaderOptions& options = {}) const;

 private:
  friend Result<Avatar> LoadAvatar(const std::string& dir);
  std::string Resolve(const std::string& path) const;

  std::string dir_;
  AvatarManifest manifest_;
  bool frames_are_video_ = false;
  std::vector<std::string> frame_files_;
  std::vector<CropRect> rects_;
  int width_ = 0, height_ = 0;
};

// Reads avatar.json and crop_rects.json, lists the frames (or opens the video), decodes the first
// frame for the frame size, and checks what can be checked without decoding every frame: the
// files exist, frame numbers run 0..N-1 without gaps, one rectangle per frame, every rectangle
// inside the frame. Each error names the file and the entry.
Result<Avatar> LoadAvatar(const std::string& dir);

// The full check behind `lipsync avatar check`: decodes every frame and compares its size with
// the first one's. `progress(done, total)` is called after each frame when given.
Status CheckAvatarFrames(const Avatar& avatar,
                         const std::function<void(int64_t, int64_t)>& progress = {});

// The roles of a lip-sync UNet's two inputs: the face [N,6,S,S] and the audio window
// [N,32,16,16] ('ave'), found by shape rather than by name.
struct UnetInputs {
  size_t visual = 0;
  size_t audio = 1;
  int size = 0;  // S, 320 or 160
};
// InvalidArgument unless the model has exactly these two float32 inputs and one float32 output
// [N,3,S,S]: the frame form's interface (Engine::frame_form()), so every avatar UNet takes faces.
Result<UnetInputs> FindUnetInputs(const ModelInfo& info);
// InvalidArgument unless the audio encoder takes mel windows [N,1,80,16] and gives [N,512].
Status CheckAudioEncoderInfo(const ModelInfo& info);

// Loads both models (with `options`) and checks them against each other and the avatar: the
// UNet's face size is the manifest's model_size, its audio input is what the encoder feeds.
Status CheckAvatarModels(const Avatar& avatar, const EngineOptions& options = {});

// What a PyTorch UNet checkpoint (a SyncTalk_2D state dict, mode 'ave') is exported as.
struct CheckpointExportOptions {
  int size = 320;  // the face's side
};
// Turns `checkpoint` into the ONNX file `out_onnx`, or says why not. The library runs no exporter
// of its own (exporting needs PyTorch): a program that imports checkpoints passes one in, as the
// `lipsync` command passes its Python exporter.
using CheckpointExporter = std::function<Status(
    const std::string& checkpoint, const std::string& out_onnx, const CheckpointExportOptions&)>;

// Importers: both write a complete avatar folder at `out_dir` (which must not exist or be empty)
// through a temporary folder beside it, so a failed import leaves nothing behind. The models are
// copied in; the model size is read from the UNet.
struct AvatarImportOptions {
  std::string out_dir;
  std::string model;          // UNet ONNX (for the Go server: defaults to the config's model_path)
  std::string audio_encoder;  // audio encoder ONNX
  std::string name;           // defaults to the source folder's (or model id's) name
  double fps = 25.0;
  // Exports a package's checkpoint when no model is given; empty: such an import fails
  // (FailedPrecondition, naming the checkpoint).
  CheckpointExporter export_checkpoint;
};

// A SyncTalk_2D dataset folder: full_body_img/<n>.jpg and landmarks/<n>.lms for n = 0..N-1. Frames
// are copied as they are; crop_rects.json comes from the landmarks.
Result<Avatar> ImportSyncTalkDataset(const std::string& dataset_dir,
                                     const AvatarImportOptions& options);

// One model of the Go server's config.yaml (models.<model_id>: model_path, background_dir with
// frame_<n>.png|jpg, or source_video when that folder is empty, crop_rects_path, num_frames).
// Relative paths are taken from the config file's folder joined with models_root when it is set.
Result<Avatar> ImportGoServerModel(const std::string& config_path, const std::string& model_id,
                                   const AvatarImportOptions& options);

// Limits on a zip archive while it is unpacked: the declared sizes and the bytes actually inflated
// are both held to them, so a zip bomb stops at the limit.
struct ZipLimits {
  int64_t max_bytes = int64_t{8} << 30;  // all entries together, uncompressed
  int64_t max_entries = 200000;          // a package has about one per video frame
};

// A model package of the Python lipsync server, a folder or a zip archive of one (its files at the
// archive's top or in one folder there) holding package_info.json, models/*.pth (UNet weights),
// aud_ave.npy (audio features [frames, 512]), face_regions_320.mp4 and masked_regions_320.mp4 (the
// crops, one video frame per frame id), face_bounds/<n>.npy ([xmin, ymin, xmax, ymax, ...] of
// frame n) and video.mp4 (the frames). The avatar gets video.mp4 as its frames, the bounds as crop
// rectangles and aud_ave.npy as its audio features; the UNet is options.model when given, else
// the checkpoint exported by options.export_checkpoint with `export_options`. Every missing file is
// named in one error. A zip is unpacked (within `zip_limits`, refusing entries that would land
// outside) into a hidden folder beside `out_dir`, which is removed afterwards whatever happens.
Result<Avatar> ImportLipSyncSrvPackage(const std::string& package,
                                       const AvatarImportOptions& options,
                                       const CheckpointExportOptions& export_options = {},
                                       const ZipLimits& zip_limits = {});

}  // namespace lipsync
