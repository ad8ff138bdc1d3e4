#include "server/core/batch_tuning.h"

#include <algorithm>
#include <chrono>

namespace lipsync::server {
namespace {

// The sizes tried: powers of two below max_batch, then max_batch itself.
std::vector<int> CandidateSizes(int max_batch) {
  std::vector<int> sizes;
  for (int b = 1; b < max_batch; b *= 2) sizes.push_back(b);
  sizes.push_back(max_batch);
  return sizes;
}

Result<double> MedianRunMs(Engine& engine, int batch, const BatchTuningOptions& options) {
  const ModelInfo& info = engine.info();
  std::vector<Tensor> inputs;
  for (const auto& in : info.inputs) {
    Shape shape = in.shape;
    shape[0] = batch;
    Tensor t(in.dtype, shape);  // zero-filled; mid-range values where the type is float32
    if (in.dtype == DataType::kFloat32) std::fill_n(t.data_as<float>(), t.element_count(), 0.5f);
    inputs.push_back(std::move(t));
  }
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<Shape> out_shapes, engine.OutputShapes(batch));
  std::vector<Tensor> outputs;
  for (size_t i = 0; i < out_shapes.size(); ++i) {
    outputs.push_back(Tensor::Uninitialized(info.outputs[i].dtype, out_shapes[i]));
  }
  std::vector<TensorView> in_views;
  for (const auto& t : inputs) in_views.push_back(t.view());
  std::vector<MutableTensorView> out_views;
  for (auto& t : outputs) out_views.push_back(t.mutable_view());

  std::vector<double> ms;
  for (int r = 0; r < options.warmup_runs + options.timed_runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    LIPSYNC_RETURN_IF_ERROR(engine.Run(in_views, out_views));
    const auto end = std::chrono::steady_clock::now();
    if (r >= options.warmup_runs) {
      ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

Result<BatchTuning> TunePreferredBatch(Engine& engine, const BatchTuningOptions& options,
                                       const std::function<void(const BatchTiming&)>& progress) {
  if (options.max_batch < 1) return InvalidArgument("batch tuning needs a max batch of at least 1");
  if (options.timed_runs < 1) return InvalidArgument("batch tuning needs at least one timed run");
  BatchTuning tuning;
  for (int batch : CandidateSizes(options.max_batch)) {
    auto ms = MedianRunMs(engine, batch, options);
    if (!ms.ok()) return ms.status().WithContext("timing batch " + std::to_string(batch));
    tuning.timings.push_back({batch, *ms / batch});
    if (progress) progress(tuning.timings.back());
  }
  double best = tuning.timings.front().ms_per_frame;
  for (const auto& t : tuning.timings) best = std::min(best, t.ms_per_frame);
  for (const auto& t : tuning.timings) {
    if (t.ms_per_frame <= best * (1.0 + options.tolerance)) {
      tuning.preferred_batch = t.batch;
      break;
    }
  }
  return tuning;
}

}  // namespace lipsync::server
