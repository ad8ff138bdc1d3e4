// PNG and JPEG bytes (avatar frames, kept encoded and decoded per frame): any bytes decode into
// an image whose size matches its pixels, or are refused with a short message.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz_check.h"
#include "lipsync/face.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto image = lipsync::DecodeImage(std::string_view(reinterpret_cast<const char*>(data), size),
                                    "the input");
  lipsync::fuzz::CheckRefusal(image.status(), "DecodeImage");
  if (image.ok() && image->bgr.size() != static_cast<size_t>(image->width) * image->height * 3) {
    lipsync::fuzz::Broken("DecodeImage", std::to_string(image->width) + "x" +
                                             std::to_string(image->height) + " with " +
                                             std::to_string(image->bgr.size()) + " bytes");
  }
  return 0;
}
