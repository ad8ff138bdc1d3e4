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

// Both conversions below run on every served frame, so they are written as whole-plane passes
// that vectorise: OpenCV's SIMD split/merge does the (de)interleaving of BGR, and the per-channel
// loops are plain unit-stride arithmetic. The scratch planes are per thread and reused.
namespace {

uint8_t* ScratchPlanes(size_t bytes) {
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < bytes) scratch.resize(bytes);
  return scratch.data();
}

}  // namespace

void FillVisualInput(const uint8_t* inner_bgr, const FaceLayout& layout, float* visual) {
  FillVisualInput(inner_bgr, static_cast<size_t>(layout.inner_size) * 3, layout, visual);
}

void FillVisualInput(const uint8_t* inner_bgr, size_t row_stride, const FaceLayout& layout,
                     float* visual) {
  const int s = layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  uint8_t* planes = ScratchPlanes(3 * plane);
#ifdef LIPSYNC_HAVE_OPENCV
  cv::Mat src(s, s, CV_8UC3, const_cast<uint8_t*>(inner_bgr), row_stride);
  cv::Mat split[3] = {cv::Mat(s, s, CV_8U, planes), cv::Mat(s, s, CV_8U, planes + plane),
                      cv::Mat(s, s, CV_8U, planes + 2 * plane)};
  cv::split(src, split);
#else
  for (int y = 0; y < s; ++y) {
    const uint8_t* row = inner_bgr + static_cast<size_t>(y) * row_stride;
    for (int x = 0; x < s; ++x) {
      for (int c = 0; c < 3; ++c)
        planes[c * plane + static_cast<size_t>(y) * s + x] = row[3 * x + c];
    }
  }
#endif
  for (int c = 0; c < 3; ++c) {
    const uint8_t* in = planes + c * plane;
    float* out = visual + c * plane;
    for (size_t i = 0; i < plane; ++i) out[i] = VisualValue(in[i]);
    // The masked copy: the same plane with the mouth rectangle zeroed.
    float* masked = visual + (3 + c) * plane;
    std::copy(out, out + plane, masked);
    for (int y = layout.mask_y; y < layout.mask_y + layout.mask_h; ++y) {
      float* row = masked + static_cast<size_t>(y) * s + layout.mask_x;
      std::fill(row, row + layout.mask_w, 0.0f);
    }
  }
}

void OutputToImage(const float* chw, int size, uint8_t* bgr) {
  const size_t plane = static_cast<size_t>(size) * size;
  uint8_t* planes = ScratchPlanes(3 * plane);
  for (int c = 0; c < 3; ++c) {
    const float* in = chw + c * plane;
    uint8_t* out = planes + c * plane;
    // Truncates, as the reference pipeline's uint8 cast does.
    for (size_t i = 0; i < plane; ++i) out[i] = OutputByte(in[i]);
  }
#ifdef LIPSYNC_HAVE_OPENCV
  const cv::Mat merged[3] = {cv::Mat(size, size, CV_8U, planes),
                             cv::Mat(size, size, CV_8U, planes + plane),
                             cv::Mat(size, size, CV_8U, planes + 2 * plane)};
  cv::Mat dst(size, size, CV_8UC3, bgr);
  cv::merge(merged, 3, dst);
#else
  for (size_t i = 0; i < plane; ++i) {
    for (int c = 0; c < 3; ++c) bgr[3 * i + c] = planes[c * plane + i];
  }
#endif
}

}  // namespace lipsync
