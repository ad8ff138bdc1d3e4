#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "lipsync/face.h"

namespace lipsync {

Result<Image> LoadImage(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return NotFound("image file '" + path + "' does not exist");
  }
  cv::Mat mat;
  try {
    mat = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    return DataLoss("cannot decode image '" + path + "': " + e.what());
  }
  if (mat.empty()) {
    return DataLoss("cannot decode image '" + path + "' (not an image, or truncated)");
  }
  if (!mat.isContinuous()) mat = mat.clone();
  Image image{mat.cols, mat.rows, std::vector<uint8_t>(mat.data, mat.data + mat.total() * 3)};
  return image;
}

Status SaveImage(const std::string& path, const Image& image) {
  if (image.bgr.size() != static_cast<size_t>(image.width) * image.height * 3 || image.width <= 0) {
    return InvalidArgument("cannot save '" + path + "': inconsistent image size");
  }
  cv::Mat mat(image.height, image.width, CV_8UC3, const_cast<uint8_t*>(image.bgr.data()));
  try {
    if (!cv::imwrite(path, mat)) return Internal("cannot write image '" + path + "'");
  } catch (const cv::Exception& e) {
    return InvalidArgument("cannot write image '" + path + "': " + e.what());
  }
  return Status::Ok();
}

}  // namespace lipsync
