#include <algorithm>
#include <cstdint>
#include <vector>
#ifdef LIPSYNC_HAVE_OPENCV
#include <opencv2/imgproc.hpp>
#else
// Builds without OpenCV (Windows): stb's resampler, Catmull-Rom cubic (OpenCV's INTER_CUBIC uses
// a = -0.75, so resized faces differ from the Linux build's by a few levels near edges).
#include <stb/stb_image_resize.h>
#endif

#include "lipsync/face.h"

namespace lipsync {

Result<Image> PrepareFace(const Image& face, const FaceLayout& layout) {
  if (face.width <= 0 || face.height <= 0 ||
      face.bgr.size() != static_cast<size_t>(face.width) * face.height * 3) {
    return InvalidArgument("face image has inconsistent size " + std::to_string(face.width) + "x" +
                           std::to_string(face.height) + " with " +
                           std::to_string(face.bgr.size()) + " bytes");
  }
  const int s = layout.inner_size;
  if (face.width == s && face.height == s) return Image{s, s, face.bgr};

  Image inner{s, s, std::vector<uint8_t>(static_cast<size_t>(s) * s * 3)};
#ifdef LIPSYNC_HAVE_OPENCV
  cv::Mat src(face.height, face.width, CV_8UC3, const_cast<uint8_t*>(face.bgr.data()));
  cv::Mat crop = src;
  if (face.width != layout.crop_size || face.height != layout.crop_size) {
    cv::resize(src, crop, cv::Size(layout.crop_size, layout.crop_size), 0, 0, cv::INTER_CUBIC);
  }
  cv::Mat dst(s, s, CV_8UC3, inner.bgr.data());
  crop(cv::Rect(layout.inner_offset, layout.inner_offset, s, s)).copyTo(dst);
#else
  const int c = layout.crop_size;
  std::vector<uint8_t> resized;
  const uint8_t* crop = face.bgr.data();
  if (face.width != c || face.height != c) {
    resized.resize(static_cast<size_t>(c) * c * 3);
    if (!stbir_resize_uint8_generic(face.bgr.data(), face.width, face.height, face.width * 3,
                                    resized.data(), c, c, c * 3, 3, STBIR_ALPHA_CHANNEL_NONE, 0,
                                    STBIR_EDGE_CLAMP, STBIR_FILTER_CATMULLROM,
                                    STBIR_COLORSPACE_LINEAR, nullptr)) {
      return Internal("cannot resize the face image to " + std::to_string(c) + "x" +
                      std::to_string(c));
    }
    crop = resized.data();
  }
  for (int y = 0; y < s; ++y) {
    const uint8_t* row =
        crop + (static_cast<size_t>(y + layout.inner_offset) * c + layout.inner_offset) * 3;
    std::copy(row, row + static_cast<size_t>(s) * 3,
              inner.bgr.data() + static_cast<size_t>(y) * s * 3);
  }
#endif
  return inner;
}

}  // namespace lipsync
