// The two image formats behind LoadImage, SaveImage, DecodeImage, EncodeJpeg and EncodePng
// (include/lipsync/face.h): PNG through libpng, JPEG through TurboJPEG.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lipsync/face.h"

namespace lipsync::internal {

// Larger images are refused before their pixels are allocated (a 30-byte header can claim
// 65535x65535); 2^28 pixels is a 16384x16384 frame.
constexpr uint64_t kMaxImagePixels = uint64_t{1} << 28;

bool LooksLikePng(std::string_view bytes);
bool LooksLikeJpeg(std::string_view bytes);

Result<Image> DecodePng(std::string_view bytes, const std::string& what);
Result<Image> DecodeJpeg(std::string_view bytes, const std::string& what);

// OK when the image's size and pixel buffer agree; `what` names it.
Status CheckImage(const Image& image, const std::string& what);

}  // namespace lipsync::internal
