#include <algorithm>
#include <opencv2/imgproc.hpp>

#include "lipsync/face.h"

namespace lipsync {

Result<FaceLayout> FaceLayout::ForInputSize(int inner_size) {
  FaceLayout layout;
  if (inner_size == 320) return layout;
  if (inner_size == 160) {
    layout.inner_size = 160;
    layout.crop_size = 168;
    layout.mask_w = 150;
    layout.mask_h = 145;
    return layout;
  }
  return InvalidArgument("no face layout for a " + std::to_string(inner_size) + "x" +
                         std::to_string(inner_size) + " model input (supported: 320, 160)");
}

Result<Image> PrepareFace(const Image& face, const FaceLayout& layout) {
  if (face.width <= 0 || face.height <= 0 ||
      face.bgr.size() != static_cast<size_t>(face.width) * face.height * 3) {
    return InvalidArgument("face image has inconsistent size " + std::to_string(face.width) + "x" +
                           std::to_string(face.height) + " with " +
                           std::to_string(face.bgr.size()) + " bytes");
  }
  const int s = layout.inner_size;
  if (face.width == s && face.height == s) return Image{s, s, face.bgr};

  cv::Mat src(face.height, face.width, CV_8UC3, const_cast<uint8_t*>(face.bgr.data()));
  cv::Mat crop = src;
  if (face.width != layout.crop_size || face.height != layout.crop_size) {
    cv::resize(src, crop, cv::Size(layout.crop_size, layout.crop_size), 0, 0, cv::INTER_CUBIC);
  }
  Image inner{s, s, std::vector<uint8_t>(static_cast<size_t>(s) * s * 3)};
  cv::Mat dst(s, s, CV_8UC3, inner.bgr.data());
  crop(cv::Rect(layout.inner_offset, layout.inner_offset, s, s)).copyTo(dst);
  return inner;
}

void FillVisualInput(const uint8_t* inner_bgr, const FaceLayout& layout, float* visual) {
  const int s = layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  constexpr float kScale = 1.0f / 255.0f;
  for (int y = 0; y < s; ++y) {
    const bool mask_row = y >= layout.mask_y && y < layout.mask_y + layout.mask_h;
    for (int x = 0; x < s; ++x) {
      const bool masked = mask_row && x >= layout.mask_x && x < layout.mask_x + layout.mask_w;
      const size_t pixel = static_cast<size_t>(y) * s + x;
      for (int c = 0; c < 3; ++c) {
        const float v = inner_bgr[pixel * 3 + c] * kScale;
        visual[c * plane + pixel] = v;
        visual[(3 + c) * plane + pixel] = masked ? 0.0f : v;
      }
    }
  }
}

void OutputToImage(const float* chw, int size, uint8_t* bgr) {
  const size_t plane = static_cast<size_t>(size) * size;
  for (size_t pixel = 0; pixel < plane; ++pixel) {
    for (int c = 0; c < 3; ++c) {
      const float v = std::clamp(chw[c * plane + pixel] * 255.0f, 0.0f, 255.0f);
      bgr[pixel * 3 + c] = static_cast<uint8_t>(v);
    }
  }
}

}  // namespace lipsync
