// The frame form on the host: the default Backend::RunFrames, used by the ONNX Runtime backend.
#include <algorithm>

#include "backends/backend.h"

namespace lipsync {

const uint8_t* InnerFace(const FrameFormInfo& form, const TensorView& faces, int64_t index,
                         size_t* row_stride) {
  const int64_t size = faces.shape[1];
  const size_t stride = static_cast<size_t>(size) * 3;
  const int64_t offset = size == form.layout.inner_size ? 0 : form.layout.inner_offset;
  *row_stride = stride;
  return faces.as<uint8_t>() + static_cast<size_t>(index) * stride * size +
         static_cast<size_t>(offset) * stride + static_cast<size_t>(offset) * 3;
}

Status Backend::RunFrames(const FrameFormInfo& form, const FaceBatch& batch,
                          const MutableTensorView& output) {
  const int64_t n = batch.faces.shape[0];
  const int s = form.layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  // Batch buffers from the host pool, which keeps them for the next call of the same size: the
  // visual input is written once, in place, and handed to Run() as the batch.
  PoolBlock visual(static_cast<size_t>(n) * 6 * plane * sizeof(float));
  PoolBlock result(output.dtype == DataType::kUInt8 ? static_cast<size_t>(n) * 3 * plane * 4 : 0);
  if (!visual || (output.dtype == DataType::kUInt8 && !result)) {
    return ResourceExhausted("no memory for the model input of " + std::to_string(n) +
                             " frames within the host memory limit");
  }
  for (int64_t f = 0; f < n; ++f) {
    size_t stride = 0;
    const uint8_t* face = InnerFace(form, batch.faces, f, &stride);
    FillVisualInput(face, stride, form.layout, visual.as<float>() + f * 6 * plane);
  }
  std::vector<TensorView> inputs(2);
  inputs[form.visual_index] = TensorView{DataType::kFloat32, Shape{n, 6, s, s}, visual.as<float>()};
  inputs[form.audio_index] = batch.audio;
  if (output.dtype == DataType::kFloat32) return Run(inputs, {output});
  MutableTensorView model_out{DataType::kFloat32, Shape{n, 3, s, s}, result.as<float>()};
  LIPSYNC_RETURN_IF_ERROR(Run(inputs, {model_out}));
  for (int64_t f = 0; f < n; ++f) {
    OutputToImage(result.as<float>() + f * 3 * plane, s, output.as<uint8_t>() + f * 3 * plane);
  }
  return Status::Ok();
}

}  // namespace lipsync
