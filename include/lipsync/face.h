// Face crops in and out of the model: the spec's pre- and post-processing for one frame (image
// files, cropping and resizing here; the layout and the tensor conversions in face_layout.h).
//
//   auto image = lipsync::LoadImage("crop.png");                 // BGR, any size
//   auto layout = lipsync::FaceLayout::ForInputSize(320);         // 328 crop, inner 320, mask
//   auto inner = lipsync::PrepareFace(*image, *layout);           // 320x320 BGR
//   lipsync::FillVisualInput(inner->bgr.data(), *layout, visual); // [6,320,320] floats
//   ... run the engine ...
//   lipsync::OutputToImage(output, layout->inner_size, face.bgr.data());
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "lipsync/face_layout.h"  // FaceLayout, FillVisualInput, OutputToImage
#include "lipsync/status.h"

namespace lipsync {

// An 8-bit BGR image, rows top to bottom, pixels interleaved (OpenCV's CV_8UC3 layout).
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> bgr;  // height * width * 3 bytes
};

// Image files and bytes: PNG through libpng, JPEG through libjpeg-turbo's TurboJPEG API. Decoding
// gives what OpenCV's imread/imdecode give with IMREAD_COLOR (any bit depth, gray, palette or
// alpha PNG to 8-bit BGR; JPEG with accurate DCT and fancy upsampling, turned as its EXIF
// orientation says); encoding gives OpenCV's imencode bytes for the same quality.
//
// A PNG or JPEG file, told apart by its first bytes, as 3-channel BGR. NotFound / DataLoss name
// the file.
Result<Image> LoadImage(const std::string& path);
// PNG for a .png path, JPEG (quality 95) for .jpg or .jpeg; another extension is InvalidArgument.
Status SaveImage(const std::string& path, const Image& image);
// PNG or JPEG bytes as BGR; `what` names them in errors (e.g. "frame 3 of the answer").
Result<Image> DecodeImage(std::string_view bytes, const std::string& what);
// Baseline JPEG, 4:2:0, quality 1..100 (InvalidArgument otherwise).
Result<std::string> EncodeJpeg(const Image& image, int quality);
// PNG (fast compression).
Result<std::string> EncodePng(const Image& image);

// The inner face the model sees: the image itself when it is inner_size square, its centre
// [offset, offset + inner) when it is crop_size square, otherwise the image resized (bicubic) to
// crop_size and then cropped.
Result<Image> PrepareFace(const Image& face, const FaceLayout& layout);

}  // namespace lipsync
