#include "lipsync/frames.h"

#include <opencv2/imgproc.hpp>

namespace lipsync {
namespace {

bool ConsistentImage(const Image& image) {
  return image.width > 0 && image.height > 0 &&
         image.bgr.size() == static_cast<size_t>(image.width) * image.height * 3;
}

cv::Mat AsMat(const Image& image) {
  return cv::Mat(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.bgr.data()));
}

cv::Rect AsCvRect(const CropRect& r) { return cv::Rect(r.x1, r.y1, r.width(), r.height()); }

}  // namespace

std::string CropRectToString(const CropRect& r) {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) about "[" + std::string.
  std::string s = "[";
  s += std::to_string(r.x1) + ",";
  s += std::to_string(r.y1) + ",";
  s += std::to_string(r.x2) + ",";
  s += std::to_string(r.y2) + "]";
  return s;
}

Status CheckCropRect(const CropRect& r, int width, int height) {
  if (r.x2 <= r.x1 || r.y2 <= r.y1) {
    return InvalidArgument("crop rectangle " + CropRectToString(r) + " is empty (needs x1 < x2 " +
                           "and y1 < y2)");
  }
  if (r.x1 < 0 || r.y1 < 0 || r.x2 > width || r.y2 > height) {
    return InvalidArgument("crop rectangle " + CropRectToString(r) + " lies outside the " +
                           std::to_string(width) + "x" + std::to_string(height) + " frame");
  }
  return Status::Ok();
}

Result<Image> CropFace(const Image& frame, const CropRect& rect, const FaceLayout& layout) {
  if (!ConsistentImage(frame)) return InvalidArgument("frame image has an inconsistent size");
  LIPSYNC_RETURN_IF_ERROR(CheckCropRect(rect, frame.width, frame.height));
  const int c = layout.crop_size;
  Image crop{c, c, std::vector<uint8_t>(static_cast<size_t>(c) * c * 3)};
  cv::Mat dst = AsMat(crop);
  cv::resize(AsMat(frame)(AsCvRect(rect)), dst, cv::Size(c, c), 0, 0, cv::INTER_CUBIC);
  return crop;
}

Status PasteFace(const uint8_t* face_bgr, const FaceLayout& layout, Image& crop,
                 const CropRect& rect, Image& frame) {
  if (!ConsistentImage(frame)) return InvalidArgument("frame image has an inconsistent size");
  if (crop.width != layout.crop_size || crop.height != layout.crop_size || !ConsistentImage(crop)) {
    return InvalidArgument("face crop is " + std::to_string(crop.width) + "x" +
                           std::to_string(crop.height) + ", expected " +
                           std::to_string(layout.crop_size) + " square");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckCropRect(rect, frame.width, frame.height));
  const int s = layout.inner_size;
  const cv::Mat face(s, s, CV_8UC3, const_cast<uint8_t*>(face_bgr));
  cv::Mat crop_mat = AsMat(crop);
  face.copyTo(crop_mat(cv::Rect(layout.inner_offset, layout.inner_offset, s, s)));
  // Resizing straight into the frame's region writes nothing outside the rectangle.
  cv::Mat region = AsMat(frame)(AsCvRect(rect));
  cv::Mat resized;
  cv::resize(crop_mat, resized, region.size(), 0, 0, cv::INTER_CUBIC);
  resized.copyTo(region);
  return Status::Ok();
}

const char* FrameOrderName(FrameOrder order) {
  return order == FrameOrder::kLoop ? "loop" : "pingpong";
}

Result<FrameOrder> ParseFrameOrder(const std::string& name) {
  if (name == "pingpong" || name == "ping-pong") return FrameOrder::kPingPong;
  if (name == "loop") return FrameOrder::kLoop;
  return InvalidArgument("frame order must be pingpong or loop, got '" + name + "'");
}

Result<FrameSequence> FrameSequence::Create(int64_t frame_count, FrameOrder order, int64_t start) {
  if (frame_count <= 0) return InvalidArgument("an avatar needs at least one frame");
  if (start == kDefaultStart) {
    start = (order == FrameOrder::kPingPong && frame_count > 1) ? 1 : 0;
  }
  if (start < 0 || start >= frame_count) {
    return InvalidArgument("start frame " + std::to_string(start) + " is outside the avatar's " +
                           std::to_string(frame_count) + " frames (0.." +
                           std::to_string(frame_count - 1) + ")");
  }
  return FrameSequence(frame_count, order, start);
}

int64_t FrameSequence::operator()(int64_t output_index) const {
  const int64_t t = start_ + output_index;
  if (order_ == FrameOrder::kLoop) return t % frame_count_;
  const int64_t last = frame_count_ - 1;
  if (last == 0) return 0;
  const int64_t m = t % (2 * last);  // a triangle wave: up over [0, last], down over (last, 2 last)
  return m <= last ? m : 2 * last - m;
}

}  // namespace lipsync
