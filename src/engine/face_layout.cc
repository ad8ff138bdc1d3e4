// The face layout and the per-frame conversions of the frame form. Plain loops over whole rows:
// no image library, so that the engine links none; each pass is unit-stride on the planar side.
#include "lipsync/face_layout.h"

#include <algorithm>
#include <array>
#include <string>
#include <vector>

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

void FillVisualInput(const uint8_t* inner_bgr, const FaceLayout& layout, float* visual) {
  FillVisualInput(inner_bgr, static_cast<size_t>(layout.inner_size) * 3, layout, visual);
}

void FillVisualInput(const uint8_t* inner_bgr, size_t row_stride, const FaceLayout& layout,
                     float* visual) {
  const int s = layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  // Every byte's value from a table: one load instead of a division per value.
  static const auto values = [] {
    std::array<float, 256> table{};
    for (int b = 0; b < 256; ++b) table[b] = VisualValue(static_cast<uint8_t>(b));
    return table;
  }();
  float* __restrict blue = visual;
  float* __restrict green = visual + plane;
  float* __restrict red = visual + 2 * plane;
  for (int y = 0; y < s; ++y) {
    const uint8_t* __restrict row = inner_bgr + static_cast<size_t>(y) * row_stride;
    const size_t at = static_cast<size_t>(y) * s;
    for (int x = 0; x < s; ++x) {
      blue[at + x] = values[row[3 * x]];
      green[at + x] = values[row[3 * x + 1]];
      red[at + x] = values[row[3 * x + 2]];
    }
  }
  // The masked copy: the same planes with the mouth rectangle zeroed.
  for (int c = 0; c < 3; ++c) {
    const float* out = visual + c * plane;
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
  // Planar bytes first (a unit-stride pass that vectorises), then interleaved. The scratch planes
  // are per thread and reused.
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < 3 * plane) scratch.resize(3 * plane);
  uint8_t* __restrict planes = scratch.data();
  // Truncates, as the reference pipeline's uint8 cast does.
  for (size_t i = 0; i < 3 * plane; ++i) planes[i] = OutputByte(chw[i]);
  uint8_t* __restrict out = bgr;
  for (size_t i = 0; i < plane; ++i) {
    out[3 * i] = planes[i];
    out[3 * i + 1] = planes[plane + i];
    out[3 * i + 2] = planes[2 * plane + i];
  }
}

}  // namespace lipsync
