// The small files of avatars and of the packages imported as avatars: avatar.json, crop_rects.json,
// a SyncTalk_2D landmark file, the Go server's config.yaml and a lipsync server package's
// face_bounds/<n>.npy (these come with a client's zip). The first byte picks the file, the rest is
// its text. A refusal must be short and not internal. What is read must make sense: a manifest or
// crop rectangles written back and read again are the same; a face square from landmarks lies in
// the frame.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "lipsync/avatar.h"
#include "pipeline/avatar/avatar_internal.h"

namespace lipsync::fuzz {
namespace {

bool Same(const AvatarManifest& a, const AvatarManifest& b) {
  return a.name == b.name && a.fps == b.fps && a.model_size == b.model_size && a.model == b.model &&
         a.audio_encoder == b.audio_encoder && a.frames == b.frames &&
         a.crop_rects == b.crop_rects && a.audio_features == b.audio_features;
}

bool Same(const std::vector<CropRect>& a, const std::vector<CropRect>& b) {
  const auto same = [](const CropRect& p, const CropRect& q) {
    return p.x1 == q.x1 && p.y1 == q.y1 && p.x2 == q.x2 && p.y2 == q.y2;
  };
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), same);
}

// A file `read` accepts, written by `write` and read again, gives what it gave.
template <typename Read, typename Write>
void RoundTrip(const std::string& path, Read read, Write write, const char* what) {
  auto first = read(path);
  CheckRefusal(first.status(), what);
  if (!first.ok()) return;
  const std::string again = path + ".again";
  if (!write(again, *first).ok()) Broken(what, "cannot write what it read");
  auto back = read(again);
  if (!back.ok()) Broken(what, "its own file refused: " + back.status().ToString());
  if (!Same(*first, *back)) Broken(what, "what was written and read back differs");
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
  static const std::string path = ScratchPath("avatar-file");
  WriteBytes(path, data + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      RoundTrip(path, lipsync::ReadAvatarManifest, lipsync::WriteAvatarManifest,
                "ReadAvatarManifest");
      break;
    case 1:
      RoundTrip(path, lipsync::ReadCropRects, lipsync::WriteCropRects, "ReadCropRects");
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
