// The image codecs of the MinGW (Windows) build: PNG and JPEG through stb's header-only decoder
// and encoders, behind the same functions as libpng and TurboJPEG on Linux (image_codecs.h).
// stb ignores a JPEG's EXIF orientation; its JPEG encoder has no quality below 1 or above 100.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>
#include <stb/stb_image_write.h>

#include <cstring>

#include "pipeline/media/image_codecs.h"

namespace lipsync::internal {
namespace {

void AppendBytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}

Result<Image> Decode(std::string_view bytes, const std::string& what, const char* format) {
  int w = 0, h = 0, channels = 0;
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  if (!stbi_info_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &channels)) {
    return DataLoss("cannot decode " + what + " as " + format + ": " + stbi_failure_reason());
  }
  if (static_cast<uint64_t>(w) * static_cast<uint64_t>(h) > kMaxImagePixels) {
    return DataLoss("cannot decode " + what + ": " + std::to_string(w) + "x" + std::to_string(h) +
                    " is larger than 2^28 pixels");
  }
  stbi_uc* rgb = stbi_load_from_memory(data, static_cast<int>(bytes.size()), &w, &h, &channels, 3);
  if (!rgb) {
    return DataLoss("cannot decode " + what + " as " + format + ": " + stbi_failure_reason());
  }
  Image image{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (size_t i = 0; i < image.bgr.size(); i += 3) {  // RGB -> BGR
    image.bgr[i] = rgb[i + 2];
    image.bgr[i + 1] = rgb[i + 1];
    image.bgr[i + 2] = rgb[i];
  }
  stbi_image_free(rgb);
  return image;
}

std::vector<uint8_t> ToRgb(const Image& image) {
  std::vector<uint8_t> rgb(image.bgr.size());
  for (size_t i = 0; i < rgb.size(); i += 3) {
    rgb[i] = image.bgr[i + 2];
    rgb[i + 1] = image.bgr[i + 1];
    rgb[i + 2] = image.bgr[i];
  }
  return rgb;
}

}  // namespace

bool LooksLikePng(std::string_view bytes) {
  static const unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return bytes.size() >= sizeof(kSignature) &&
         std::memcmp(bytes.data(), kSignature, sizeof(kSignature)) == 0;
}

bool LooksLikeJpeg(std::string_view bytes) {
  return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF &&
         static_cast<unsigned char>(bytes[1]) == 0xD8 &&
         static_cast<unsigned char>(bytes[2]) == 0xFF;
}

Result<Image> DecodePng(std::string_view bytes, const std::string& what) {
  return Decode(bytes, what, "PNG");
}

Result<Image> DecodeJpeg(std::string_view bytes, const std::string& what) {
  return Decode(bytes, what, "JPEG");
}

}  // namespace lipsync::internal

namespace lipsync {

Result<std::string> EncodePng(const Image& image) {
  LIPSYNC_RETURN_IF_ERROR(internal::CheckImage(image, "cannot encode PNG"));
  const std::vector<uint8_t> rgb = internal::ToRgb(image);
  std::string out;
  if (!stbi_write_png_to_func(internal::AppendBytes, &out, image.width, image.height, 3, rgb.data(),
                              image.width * 3)) {
    return Internal("PNG encoding failed");
  }
  return out;
}

Result<std::string> EncodeJpeg(const Image& image, int quality) {
  if (quality < 1 || quality > 100) {
    return InvalidArgument("JPEG quality must be 1..100, got " + std::to_string(quality));
  }
  LIPSYNC_RETURN_IF_ERROR(internal::CheckImage(image, "cannot encode JPEG"));
  const std::vector<uint8_t> rgb = internal::ToRgb(image);
  std::string out;
  if (!stbi_write_jpg_to_func(internal::AppendBytes, &out, image.width, image.height, 3, rgb.data(),
                              quality)) {
    return Internal("JPEG encoding failed");
  }
  return out;
}

}  // namespace lipsync
