// Whole video frames in and out of the model: cut the face crop out of an avatar frame, paste the
// model's face back, and the order in which an avatar's frames are shown (spec section 3).
//
//   auto layout = lipsync::FaceLayout::ForInputSize(320);
//   auto crop = lipsync::CropFace(frame, rect, *layout);       // 328x328 bicubic
//   auto inner = lipsync::PrepareFace(*crop, *layout);         // its centre, 320x320
//   lipsync::FillVisualInput(inner->bgr.data(), *layout, visual);
//   ... run the engine, OutputToImage(output, 320, face) ...
//   lipsync::PasteFace(face, *layout, *crop, rect, frame);     // frame now has the new mouth
#pragma once

#include <cstdint>
#include <string>

#include "lipsync/face.h"
#include "lipsync/status.h"

namespace lipsync {

// A face rectangle in frame pixels, half-open: columns [x1, x2), rows [y1, y2). This is numpy's
// frame[y1:y2, x1:x2] and the [x1, y1, x2, y2] entries of a crop_rects.json file.
struct CropRect {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int width() const { return x2 - x1; }
  int height() const { return y2 - y1; }
  bool operator==(const CropRect&) const = default;
};

// "[x1,y1,x2,y2]"
std::string CropRectToString(const CropRect& rect);

// InvalidArgument unless the rectangle is non-empty and lies inside a width x height frame.
Status CheckCropRect(const CropRect& rect, int width, int height);

// The face crop the model's input is made from: the rectangle cut out of `frame` and resized
// (bicubic) to layout.crop_size square. PrepareFace() of the result gives the inner face.
Result<Image> CropFace(const Image& frame, const CropRect& rect, const FaceLayout& layout);

// The way back: the model's face (`face_bgr`, inner_size^2 * 3 bytes from OutputToImage) replaces
// the inner square of `crop` (the CropFace result, modified in place), the crop is resized
// (bicubic) back to the rectangle's size and written into `frame`. Pixels outside the rectangle
// are not touched.
Status PasteFace(const uint8_t* face_bgr, const FaceLayout& layout, Image& crop,
                 const CropRect& rect, Image& frame);

// How output frames walk over an avatar's N frames.
//  kPingPong (SyncTalk_2D): forward to the last frame, backward to frame 0, forward again:
//            0,1,..,N-1,N-2,..,1,0,1,.. (period 2(N-1)). Upstream starts at frame 1.
//  kLoop (the Go server): 0,1,..,N-1,0,1,..
enum class FrameOrder { kPingPong, kLoop };

// "pingpong" / "loop" and back.
const char* FrameOrderName(FrameOrder order);
Result<FrameOrder> ParseFrameOrder(const std::string& name);

// The walk with a start: output frame i shows avatar frame Position(start + i), where `start` is
// an avatar frame index in [0, N-1]; the walk leaves it going forward (ping-pong turns back at the
// last frame). The default start is upstream's: 1 for ping-pong (0 for a one-frame avatar), 0 for
// loop.
class FrameSequence {
 public:
  static Result<FrameSequence> Create(int64_t frame_count, FrameOrder order,
                                      int64_t start = kDefaultStart);
  static constexpr int64_t kDefaultStart = -1;

  int64_t operator()(int64_t output_index) const;  // output_index >= 0
  int64_t start() const { return start_; }
  int64_t frame_count() const { return frame_count_; }
  FrameOrder order() const { return order_; }

 private:
  FrameSequence(int64_t n, FrameOrder order, int64_t start)
      : frame_count_(n), order_(order), start_(start) {}
  int64_t frame_count_;
  FrameOrder order_;
  int64_t start_;
};

}  // namespace lipsync
