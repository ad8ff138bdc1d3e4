// The small files of avatars and of the packages imported as avatars: avatar.json, crop_rects.json,
// a SyncTalk_2D landmark file, the Go server's config.yaml and a lipsync server package's
// face_bounds/<n>.npy (these come with a client's zip). The first byte picks the file, the rest is
// its text. A refusal must be short and not internal. What is read must make sense: a manifest or
// crop rectangles written back and read again are the same; a face square from landmarks lies in
// the frame.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "lipsync/avatar.h"
#include "pipeline/avatar/avatar_internal.h"

namespace lipsync::fuzz {
namespace {

// A file of this process's own (the target may run beside other fuzzers).
const std::string& Scratch() {
  static const std::string path =
      (std::filesystem::temp_directory_path() /
       ("lipsync-avatar-files-" + std::to_string(std::random_device{}())))
          .string();
  return path;
}

void Write(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

bool Same(const AvatarManifest& a, const AvatarManifest& b) {
  return a.name == b.name && a.fps == b.fps && a.model_size == b.model_size && a.model == b.model &&
         a.audio_encoder == b.audio_encoder && a.frames == b.frames &&
         a.crop_rects == b.crop_rects && a.audio_features == b.audio_features;
}

void Manifest(const std::string& path) {
  auto m = ReadAvatarManifest(path);
  CheckRefusal(m.status(), "ReadAvatarManifest");
  if (!m.ok()) return;
  const std::string again = path + ".again";
  if (!WriteAvatarManifest(again, *m).ok()) Broken("WriteAvatarManifest", "cannot write");
  auto back = ReadAvatarManifest(again);
  if (!back.ok()) Broken("ReadAvatarManifest", "its own file refused: " + back.status().ToString());
  if (!Same(*m, *back)) Broken("ReadAvatarManifest", "a manifest written and read back differs");
}

void Rects(const std::string& path) {
  auto rects = ReadCropRects(path);
  CheckRefusal(rects.status(), "ReadCropRects");
  if (!rects.ok()) return;
  const std::string again = path + ".again";
  if (!WriteCropRects(again, *rects).ok()) Broken("WriteCropRects", "cannot write");
  auto back = ReadCropRects(again);
  if (!back.ok()) Broken("ReadCropRects", "its own file refused: " + back.status().ToString());
  if (back->size() != rects->size()) Broken("ReadCropRects", "rectangles written and read differ");
  for (size_t i = 0; i < rects->size(); ++i) {
    const CropRect &a = (*rects)[i], &b = (*back)[i];
    if (a.x1 != b.x1 || a.y1 != b.y1 || a.x2 != b.x2 || a.y2 != b.y2) {
      Broken("ReadCropRects", "rectangle " + std::to_string(i) + " written and read differs");
    }
  }
}

void Landmarks(const std::string& path, int width, int height) {
  auto points = ReadLandmarks(path);
  CheckRefusal(points.status(), "ReadLandmarks");
  if (!points.ok()) return;
  if (points->size() != kLandmarkCount) Broken("ReadLandmarks", "not 110 points");
  auto rect = CropRectFromLandmarks(*points, width, height);
  CheckRefusal(rect.status(), "CropRectFromLandmarks");
  if (!rect.ok()) return;
  if (rect->x1 < 0 || rect->y1 < 0 || rect->x2 > width || rect->y2 > height ||
      rect->x2 <= rect->x1 || rect->y2 <= rect->y1) {
    Broken("CropRectFromLandmarks", "face square " + CropRectToString(*rect) + " outside " +
                                        std::to_string(width) + "x" + std::to_string(height));
  }
}

void GoConfig(const std::string& path) {
  std::string models_root;
  for (const char* id : {"sanders", "bob"}) {
    auto model = internal::ReadGoModel(path, id, &models_root);
    CheckRefusal(model.status(), "ReadGoModel");
    if (model.ok() && model->num_frames < 0) Broken("ReadGoModel", "negative num_frames");
  }
}

}  // namespace
}  // namespace lipsync::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lipsync::fuzz;
  if (size == 0) return 0;
  const std::string& path = Scratch();
  Write(path, data + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      Manifest(path);
      break;
    case 1:
      Rects(path);
      break;
    case 2:
      Landmarks(path, 1 + data[0] * 7, 1 + data[0] * 5);
      break;
    case 3:
      GoConfig(path);
      break;
    default:
      CheckRefusal(lipsync::internal::ReadFaceBounds(path).status(), "ReadFaceBounds");
  }
  return 0;
}
