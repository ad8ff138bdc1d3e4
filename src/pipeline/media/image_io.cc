// Image files: PNG and JPEG, told apart by their first bytes when read and by the extension when
// written (src/pipeline/media/image_codecs.h has the codecs).
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/platform.h"
#include "lipsync/face.h"
#include "pipeline/media/image_codecs.h"

namespace lipsync {
namespace {

// OpenCV's imwrite default, kept so that frames written as JPEG look as they did.
constexpr int kFileJpegQuality = 95;

std::string LowerExtension(const std::string& path) {
  std::string ext = platform::PathToUtf8(platform::PathFromUtf8(path).extension());
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

}  // namespace

namespace internal {

Status CheckImage(const Image& image, const std::string& what) {
  if (image.width <= 0 || image.height <= 0 ||
      image.bgr.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return InvalidArgument(what + ": inconsistent image size (" + std::to_string(image.width) +
                           "x" + std::to_string(image.height) + ", " +
                           std::to_string(image.bgr.size()) + " bytes)");
  }
  return Status::Ok();
}

}  // namespace internal

Result<Image> DecodeImage(std::string_view bytes, const std::string& what) {
  if (internal::LooksLikePng(bytes)) return internal::DecodePng(bytes, what);
  if (internal::LooksLikeJpeg(bytes)) return internal::DecodeJpeg(bytes, what);
  if (bytes.empty()) return DataLoss("cannot decode " + what + ": it is empty");
  return DataLoss("cannot decode " + what + ": not a PNG or JPEG image");
}

Result<Image> LoadImage(const std::string& path) {
  LIPSYNC_ASSIGN_OR_RETURN(std::string bytes, platform::ReadWholeFile(path, "image file"));
  return DecodeImage(bytes, "image '" + path + "'");
}

Status SaveImage(const std::string& path, const Image& image) {
  LIPSYNC_RETURN_IF_ERROR(internal::CheckImage(image, "cannot save '" + path + "'"));
  const std::string ext = LowerExtension(path);
  Result<std::string> bytes = InvalidArgument("cannot write image '" + path +
                                              "': the extension must be .png, .jpg or .jpeg");
  if (ext == ".png") {
    bytes = EncodePng(image);
  } else if (ext == ".jpg" || ext == ".jpeg") {
    bytes = EncodeJpeg(image, kFileJpegQuality);
  }
  if (!bytes.ok()) return bytes.status();
  const std::filesystem::path file = platform::PathFromUtf8(path);
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
  out.close();
  if (!out) {
    std::error_code ec;
    std::filesystem::remove(file, ec);  // no partial file left behind
    return Internal("cannot write image '" + path + "'");
  }
  return Status::Ok();
}

}  // namespace lipsync
