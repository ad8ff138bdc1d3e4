#include "pipeline/stream/frame_store.h"

#include <utility>

namespace lipsync::stream {

const char* FrameStorageName(FrameStorage storage) {
  return storage == FrameStorage::kEncoded ? "encoded" : "decoded";
}

Result<FrameStorage> ParseFrameStorage(const std::string& name) {
  if (name == "decoded") return FrameStorage::kDecoded;
  if (name == "encoded") return FrameStorage::kEncoded;
  return InvalidArgument("frame storage must be decoded or encoded, got '" + name + "'");
}

FrameStore FrameStore::Decoded(std::vector<Image> frames, std::vector<Image> crops) {
  FrameStore store;
  store.storage_ = FrameStorage::kDecoded;
  for (const Image& frame : frames) store.bytes_ += static_cast<int64_t>(frame.bgr.size());
  if (crops.size() == frames.size()) {
    for (const Image& crop : crops) store.bytes_ += static_cast<int64_t>(crop.bgr.size());
    store.crops_ = std::move(crops);
  }
  if (!frames.empty()) {
    store.width_ = frames[0].width;
    store.height_ = frames[0].height;
  }
  store.decoded_ = std::move(frames);
  return store;
}

FrameStore FrameStore::Encoded(std::vector<std::string> encoded, int width, int height) {
  FrameStore store;
  store.storage_ = FrameStorage::kEncoded;
  for (const std::string& bytes : encoded) store.bytes_ += static_cast<int64_t>(bytes.size());
  store.encoded_ = std::move(encoded);
  store.width_ = width;
  store.height_ = height;
  return store;
}

int64_t FrameStore::size() const {
  return static_cast<int64_t>(storage_ == FrameStorage::kEncoded ? encoded_.size()
                                                                 : decoded_.size());
}

Status FrameStore::CheckIndex(int64_t index) const {
  if (index >= 0 && index < size()) return Status::Ok();
  return InvalidArgument("avatar frame " + std::to_string(index) + " is outside 0.." +
                         std::to_string(size() - 1));
}

Result<Image> FrameStore::Decode(int64_t index) const {
  const std::string what = "avatar frame " + std::to_string(index);
  LIPSYNC_ASSIGN_OR_RETURN(Image image, DecodeImage(encoded_[static_cast<size_t>(index)], what));
  if (image.width != width_ || image.height != height_) {
    return DataLoss(what + " decodes to " + std::to_string(image.width) + "x" +
                    std::to_string(image.height) + ", not " + std::to_string(width_) + "x" +
                    std::to_string(height_));
  }
  return image;
}

Result<std::shared_ptr<const Image>> FrameStore::Get(int64_t index) const {
  LIPSYNC_RETURN_IF_ERROR(CheckIndex(index));
  if (storage_ == FrameStorage::kDecoded) {
    // Not owned: the store outlives its readers.
    return std::shared_ptr<const Image>(std::shared_ptr<void>(),
                                        &decoded_[static_cast<size_t>(index)]);
  }
  LIPSYNC_ASSIGN_OR_RETURN(Image image, Decode(index));
  return std::shared_ptr<const Image>(std::make_shared<Image>(std::move(image)));
}

Result<Image> FrameStore::Copy(int64_t index) const {
  LIPSYNC_RETURN_IF_ERROR(CheckIndex(index));
  if (storage_ == FrameStorage::kDecoded) return decoded_[static_cast<size_t>(index)];
  return Decode(index);
}

const Image* FrameStore::crop(int64_t index) const {
  if (index < 0 || index >= static_cast<int64_t>(crops_.size())) return nullptr;
  return &crops_[static_cast<size_t>(index)];
}

}  // namespace lipsync::stream
