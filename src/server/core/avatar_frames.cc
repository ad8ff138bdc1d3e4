#include "server/core/avatar_frames.h"

#include <algorithm>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/platform.h"
#include "lipsync/frames.h"
#include "pipeline/avatar/avatar_internal.h"
#include "server/core/for_each_frame.h"

namespace lipsync::server {
namespace {

// A video's frames are decoded in order by its one reader; this many at a time are then encoded
// on every core, so that at most this many decoded frames are held beside the store.
constexpr int kVideoChunk = 64;

// Frame `i` of an image folder as its file's bytes, decoded once to check them.
Result<std::string> ReadFrameFile(const Avatar& avatar, int64_t i) {
  const std::string& path = avatar.frame_files()[static_cast<size_t>(i)];
  const std::string what = "frame " + std::to_string(i) + " ('" + path + "')";
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, platform::ReadWholeFile(path, "frame file"));
  LIPSYNC_ASSIGN_OR_RETURN(Image image, DecodeImage(bytes, what));
  LIPSYNC_RETURN_IF_ERROR(
      internal::CheckFrameSize(image, i, path, avatar.width(), avatar.height()));
  return bytes;
}

Result<stream::FrameStore> LoadEncodedVideo(const Avatar& avatar, FrameReader& reader) {
  const int count = static_cast<int>(avatar.frame_count());
  std::vector<std::string> encoded(static_cast<size_t>(count));
  std::vector<Image> chunk;
  for (int first = 0; first < count; first += kVideoChunk) {
    const int n = std::min(kVideoChunk, count - first);
    chunk.resize(static_cast<size_t>(n));
    for (int k = 0; k < n; ++k) {
      LIPSYNC_ASSIGN_OR_RETURN(chunk[static_cast<size_t>(k)], reader.Read(first + k));
    }
    LIPSYNC_RETURN_IF_ERROR(ForEachFrame(n, [&](int k) -> Status {
      LIPSYNC_ASSIGN_OR_RETURN(encoded[static_cast<size_t>(first + k)],
                               EncodePng(chunk[static_cast<size_t>(k)]));
      return Status::Ok();
    }));
  }
  return stream::FrameStore::Encoded(std::move(encoded), avatar.width(), avatar.height());
}

// Decoded frames kept with their face crops, cut on every core: each frame served then costs a
// copy of its crop instead of a bicubic resize of its rectangle to the crop's size.
Result<stream::FrameStore> DecodedWithCrops(const Avatar& avatar, std::vector<Image> frames,
                                            const FaceLayout& layout) {
  std::vector<Image> crops(frames.size());
  LIPSYNC_RETURN_IF_ERROR(ForEachFrame(static_cast<int>(frames.size()), [&](int i) -> Status {
    const auto k = static_cast<size_t>(i);
    auto crop = CropFace(frames[k], avatar.crop_rects()[k], layout);
    if (!crop.ok()) return crop.status().WithContext("avatar frame " + std::to_string(i));
    crops[k] = std::move(*crop);
    return Status::Ok();
  }));
  return stream::FrameStore::Decoded(std::move(frames), std::move(crops));
}

}  // namespace

Result<stream::FrameStore> LoadAvatarFrames(const Avatar& avatar, stream::FrameStorage storage,
                                            const FaceLayout& layout) {
  LIPSYNC_ASSIGN_OR_RETURN(auto reader, avatar.OpenFrames());
  const int count = static_cast<int>(avatar.frame_count());
  const bool encoded = storage == stream::FrameStorage::kEncoded;
  if (avatar.frames_are_video()) {
    if (encoded) return LoadEncodedVideo(avatar, *reader);
    std::vector<Image> frames(static_cast<size_t>(count));
    for (int i = 0; i < count; ++i) {
      LIPSYNC_ASSIGN_OR_RETURN(frames[static_cast<size_t>(i)], reader->Read(i));
    }
    return DecodedWithCrops(avatar, std::move(frames), layout);
  }
  // An image folder's reader keeps no state between frames: every core reads (a 1920x1080 PNG
  // frame takes tens of milliseconds, and an avatar of a few minutes has thousands).
  if (encoded) {
    std::vector<std::string> files(static_cast<size_t>(count));
    LIPSYNC_RETURN_IF_ERROR(ForEachFrame(count, [&](int i) -> Status {
      LIPSYNC_ASSIGN_OR_RETURN(files[static_cast<size_t>(i)], ReadFrameFile(avatar, i));
      return Status::Ok();
    }));
    return stream::FrameStore::Encoded(std::move(files), avatar.width(), avatar.height());
  }
  std::vector<Image> frames(static_cast<size_t>(count));
  LIPSYNC_RETURN_IF_ERROR(ForEachFrame(count, [&](int i) -> Status {
    LIPSYNC_ASSIGN_OR_RETURN(frames[static_cast<size_t>(i)], reader->Read(i));
    return Status::Ok();
  }));
  return DecodedWithCrops(avatar, std::move(frames), layout);
}

int64_t ExpectedFrameBytes(const Avatar& avatar, stream::FrameStorage storage) {
  const int64_t decoded = avatar.frame_count() * avatar.width() * avatar.height() * 3;
  if (storage == stream::FrameStorage::kDecoded) {
    auto layout = FaceLayout::ForInputSize(avatar.manifest().model_size);
    const int64_t crop = layout.ok() ? int64_t{layout->crop_size} * layout->crop_size * 3 : 0;
    return decoded + avatar.frame_count() * crop;
  }
  if (avatar.frames_are_video()) return decoded;
  int64_t bytes = 0;
  for (const std::string& file : avatar.frame_files()) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(platform::PathFromUtf8(file), ec);
    if (!ec) bytes += static_cast<int64_t>(size);
  }
  return bytes;
}

}  // namespace lipsync::server
