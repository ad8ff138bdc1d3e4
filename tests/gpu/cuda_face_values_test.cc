// The frame kernels' byte <-> float conversions value by value: every byte scales to the
// correctly rounded byte / 255 (upstream's float32 division), and outputs at 1 - 2^-24, 1, the
// smallest positive float and beyond give upstream's truncating cast, as the CPU backends do.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cuda/kernels/frames.cuh"
#include "gpu_test_util.h"
#include "lipsync/face_values.h"

namespace lipsync {
namespace {

using testing_gpu::DeviceBuffer;
using testing_gpu::HaveGpu;

TEST(CudaFaceValues, EveryByteScalesAsUpstreamDivides) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  // One 16x16 face, no mask: pixel p holds bytes p, p, p, so channel 0 covers 0..255.
  cuda::FaceGeometry g;
  g.size = g.source_size = 16;
  g.mask_w = g.mask_h = 0;
  std::vector<uint8_t> faces(16 * 16 * 3);
  for (size_t i = 0; i < faces.size(); ++i) faces[i] = static_cast<uint8_t>(i / 3);
  DeviceBuffer d_faces(faces.size()), d_visual(16 * 16 * 6 * sizeof(float));
  ASSERT_TRUE(d_faces.ptr && d_visual.ptr);
  ASSERT_CUDA(cudaMemcpy(d_faces.ptr, faces.data(), faces.size(), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cuda::LaunchFacesToVisual<float>(static_cast<const uint8_t*>(d_faces.ptr), 1, g,
                                               static_cast<float*>(d_visual.ptr), nullptr));
  std::vector<float> visual(16 * 16 * 6);
  ASSERT_CUDA(cudaMemcpy(visual.data(), d_visual.ptr, visual.size() * sizeof(float),
                         cudaMemcpyDeviceToHost));
  for (int b = 0; b < 256; ++b) {
    const float want = static_cast<float>(b / 255.0);  // double, rounded once: exact
    for (int c = 0; c < 6; ++c) ASSERT_EQ(visual[b * 6 + c], want) << "byte " << b;
  }
}

TEST(CudaFaceValues, BoundaryOutputsGiveUpstreamsCast) {
  ASSERT_TRUE(HaveGpu()) << "these tests need a CUDA GPU";
  const float below_one = std::nextafter(1.0f, 0.0f);
  const std::vector<float> values = {
      below_one, 1.0f, std::nextafter(0.0f, 1.0f), std::nextafter(below_one, 0.0f), NAN, -1.0f,
      2.0f,      0.5f};
  DeviceBuffer d_values(values.size() * sizeof(float)), d_bytes(values.size());
  ASSERT_TRUE(d_values.ptr && d_bytes.ptr);
  ASSERT_CUDA(cudaMemcpy(d_values.ptr, values.data(), values.size() * sizeof(float),
                         cudaMemcpyHostToDevice));
  ASSERT_CUDA(cuda::LaunchOutputToBytes<float>(static_cast<const float*>(d_values.ptr),
                                               static_cast<int64_t>(values.size()),
                                               static_cast<uint8_t*>(d_bytes.ptr), nullptr));
  std::vector<uint8_t> bytes(values.size());
  ASSERT_CUDA(cudaMemcpy(bytes.data(), d_bytes.ptr, bytes.size(), cudaMemcpyDeviceToHost));
  const std::vector<uint8_t> want = {254, 255, 0, 254, 0, 0, 255, 127};
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(bytes[i], want[i]) << "value " << values[i];
    EXPECT_EQ(bytes[i], OutputByte(values[i])) << "value " << values[i];
  }
}

}  // namespace
}  // namespace lipsync
