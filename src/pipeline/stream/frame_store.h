// An avatar's frames held in memory by the server: decoded (BGR, ready to paste into, with each
// frame's face crop when the loader cut them) or as compressed image bytes decoded on each use. A
// 1920x1080 frame is 6.2 MB decoded and a few hundred KB as a JPEG file, so an avatar of two
// thousand frames needs 12 GB one way and well under a gigabyte the other; the price is one image
// decode per frame served.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lipsync/face.h"

namespace lipsync::stream {

enum class FrameStorage {
  kDecoded,  // every frame decoded once, at load (and its face crop cut, by the server's loader)
  kEncoded,  // each frame's PNG or JPEG bytes (a video's frames as PNG), decoded when used
};
const char* FrameStorageName(FrameStorage storage);
Result<FrameStorage> ParseFrameStorage(const std::string& name);

class FrameStore {
 public:
  FrameStore() = default;
  // `crops`: none, or one per frame, CropFace of the frame with its rectangle, so that a frame
  // served is not cropped again (a bicubic resize per frame and request).
  static FrameStore Decoded(std::vector<Image> frames, std::vector<Image> crops = {});
  // `encoded[i]` holds PNG or JPEG bytes of a width x height frame (checked as they were made).
  static FrameStore Encoded(std::vector<std::string> encoded, int width, int height);

  FrameStorage storage() const { return storage_; }
  int64_t size() const;
  int width() const { return width_; }
  int height() const { return height_; }
  // What the frames (and crops) hold in memory.
  int64_t bytes() const { return bytes_; }

  // Frame `index` to read: the kept image itself (decoded), or a fresh decode (encoded).
  Result<std::shared_ptr<const Image>> Get(int64_t index) const;
  // Frame `index` as a copy the caller may change (for encoded frames, the decode itself).
  Result<Image> Copy(int64_t index) const;
  // Frame `index`'s face crop as kept at load; null when the store keeps none.
  const Image* crop(int64_t index) const;

 private:
  Status CheckIndex(int64_t index) const;
  Result<Image> Decode(int64_t index) const;

  FrameStorage storage_ = FrameStorage::kDecoded;
  std::vector<Image> decoded_;
  std::vector<Image> crops_;  // empty, or one per decoded frame
  std::vector<std::string> encoded_;
  int width_ = 0, height_ = 0;
  int64_t bytes_ = 0;
};

}  // namespace lipsync::stream
