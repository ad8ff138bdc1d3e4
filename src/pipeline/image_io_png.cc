// Image files when LIPSYNC_IMAGE_CODECS is png (the lean build's choice): PNG only, through libpng,
// so that the binaries do not carry OpenCV's codecs and the hundred libraries behind them.
#include <png.h>

#include <cstdio>
#include <filesystem>

#include "lipsync/face.h"

namespace lipsync {
namespace {

bool IsPng(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png";
}

}  // namespace

Result<Image> LoadImage(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return NotFound("image file '" + path + "' does not exist");
  }
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str())) {
    const std::string why = png.message;
    png_image_free(&png);
    return DataLoss("cannot decode image '" + path + "' (this build reads PNG only): " + why);
  }
  png.format = PNG_FORMAT_BGR;
  Image image{static_cast<int>(png.width), static_cast<int>(png.height), {}};
  image.bgr.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.bgr.data(), 0, nullptr)) {
    const std::string why = png.message;
    png_image_free(&png);
    return DataLoss("cannot decode image '" + path + "' (truncated or corrupt): " + why);
  }
  return image;
}

Status SaveImage(const std::string& path, const Image& image) {
  if (image.bgr.size() != static_cast<size_t>(image.width) * image.height * 3 || image.width <= 0) {
    return InvalidArgument("cannot save '" + path + "': inconsistent image size");
  }
  if (!IsPng(path)) {
    return InvalidArgument("cannot write image '" + path + "': this build writes PNG only");
  }
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_BGR;
  if (!png_image_write_to_file(&png, path.c_str(), 0, image.bgr.data(), 0, nullptr)) {
    const std::string why = png.message;
    std::remove(path.c_str());  // no partial file left behind
    return Internal("cannot write image '" + path + "': " + why);
  }
  return Status::Ok();
}

}  // namespace lipsync
