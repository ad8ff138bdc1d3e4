// The engine's side of a face: the geometry of a model's face crop and the two per-frame
// conversions between face bytes and the model's tensors. The engine's frame form
// (Engine::RunFrames) and every backend need them, so they live here, below face.h's image files
// and resizing, with no image library behind them.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lipsync/face_values.h"  // VisualValue, OutputByte
#include "lipsync/status.h"

namespace lipsync {

// Geometry of a model's face crop: the crop is resized to crop_size, the model sees the
// inner_size square at inner_offset, and the mouth region [mask_x, mask_x + mask_w) x
// [mask_y, mask_y + mask_h) of the inner image is blacked out in the masked copy.
struct FaceLayout {
  int inner_size = 320;
  int crop_size = 328;
  int inner_offset = 4;
  int mask_x = 5, mask_y = 5, mask_w = 310, mask_h = 305;

  // 320 (SyncTalk_2D) or 160 (the smaller variant); other sizes are InvalidArgument.
  static Result<FaceLayout> ForInputSize(int inner_size);
};

// Writes the model's visual input for one frame, [6, S, S] floats (S = layout.inner_size):
// channels 0-2 the inner face, channels 3-5 its masked copy, BGR, each byte / 255 (VisualValue).
// `inner_bgr` holds S*S*3 bytes.
void FillVisualInput(const uint8_t* inner_bgr, const FaceLayout& layout, float* visual);
// The same for an inner face whose rows are `row_stride` bytes apart (e.g. the centre of a crop).
void FillVisualInput(const uint8_t* inner_bgr, size_t row_stride, const FaceLayout& layout,
                     float* visual);

// Converts one model output [3, S, S] (BGR in [0, 1]) to S*S*3 interleaved bytes with OutputByte:
// *255, clamped, truncated toward zero as the reference pipeline's uint8 cast does.
void OutputToImage(const float* chw, int size, uint8_t* bgr);

}  // namespace lipsync
