// The "reference" backend: compiles the model into a Plan and runs it with the plain CPU kernels.
#include <algorithm>
#include <exception>
#include <memory>
#include <vector>

#include "backends/backend.h"
#include "backends/reference/reference_kernels.h"
#include "graph/compiler.h"
#include "lipsync/face_layout.h"

namespace lipsync {
namespace {

class ReferenceBackend : public Backend {
 public:
  ReferenceBackend(graph::Plan plan, int threads) : plan_(std::move(plan)), threads_(threads) {}

  Status Run(const std::vector<TensorView>& inputs,
             const std::vector<MutableTensorView>& outputs) override {
    if (inputs.size() != plan_.inputs.size() || outputs.size() != plan_.outputs.size()) {
      return InvalidArgument("reference backend: expected " + std::to_string(plan_.inputs.size()) +
                             " inputs and " + std::to_string(plan_.outputs.size()) + " outputs");
    }
    const int64_t batch = inputs[0].shape.at(0);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].dtype != DataType::kFloat32 || inputs[i].shape.size() != 4 ||
          inputs[i].shape[0] != batch) {
        return InvalidArgument("reference backend: input '" + plan_.inputs[i].name +
                               "' must be float32 NCHW with batch " + std::to_string(batch));
      }
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].dtype != DataType::kFloat32 ||
          outputs[i].byte_size() != static_cast<size_t>(OutputBuffer(i).size * batch) * 4) {
        return InvalidArgument("reference backend: output '" + plan_.outputs[i].name +
                               "' buffer has the wrong type or size");
      }
    }
    LIPSYNC_ASSIGN_OR_RETURN(Arena arena, MakeArena(batch));
    for (size_t i = 0; i < inputs.size(); ++i) {
      ToNhwc(inputs[i].as<float>(), InputBuffer(i), batch, arena.data());
    }
    RunSteps(batch, arena.data());
    for (size_t i = 0; i < outputs.size(); ++i) {
      ToNchw(OutputBuffer(i), batch, arena.data(), outputs[i].as<float>());
    }
    return Status::Ok();
  }

  // The faces go straight into the visual input's NHWC arena buffer (the six channels of a pixel
  // side by side), and a uint8 output is read straight from the NHWC output buffer, whose three
  // channels per pixel are already the interleaved BGR of an image.
  Status RunFrames(const FrameFormInfo& form, const FaceBatch& batch,
                   const MutableTensorView& output) override {
    const int64_t n = batch.faces.shape[0];
    LIPSYNC_ASSIGN_OR_RETURN(Arena arena, MakeArena(n));
    const FaceLayout& layout = form.layout;
    const int s = layout.inner_size;
    float* visual = arena.data() + InputBuffer(form.visual_index).offset * n;
    for (int64_t f = 0; f < n; ++f) {
      size_t stride = 0;
      const uint8_t* face = InnerFace(form, batch.faces, f, &stride);
      for (int y = 0; y < s; ++y) {
        const uint8_t* row = face + static_cast<size_t>(y) * stride;
        const bool mask_row = y >= layout.mask_y && y < layout.mask_y + layout.mask_h;
        float* dst = visual + ((f * s + y) * static_cast<int64_t>(s)) * 6;
        for (int x = 0; x < s; ++x, dst += 6) {
          const bool masked = mask_row && x >= layout.mask_x && x < layout.mask_x + layout.mask_w;
          for (int c = 0; c < 3; ++c) {
            const float v = VisualValue(row[x * 3 + c]);
            dst[c] = v;
            dst[3 + c] = masked ? 0.0f : v;
          }
        }
      }
    }
    ToNhwc(batch.audio.as<float>(), InputBuffer(form.audio_index), n, arena.data());
    RunSteps(n, arena.data());
    const graph::PlanBuffer& out = OutputBuffer(0);
    if (output.dtype == DataType::kFloat32) {
      ToNchw(out, n, arena.data(), output.as<float>());
      return Status::Ok();
    }
    const float* src = arena.data() + out.offset * n;
    uint8_t* dst = output.as<uint8_t>();
    const int64_t count = n * out.size;
    for (int64_t i = 0; i < count; ++i) dst[i] = OutputByte(src[i]);
    return Status::Ok();
  }

 private:
  const graph::PlanBuffer& InputBuffer(size_t i) const {
    return plan_.buffers[plan_.inputs[i].buffer];
  }
  const graph::PlanBuffer& OutputBuffer(size_t i) const {
    return plan_.buffers[plan_.outputs[i].buffer];
  }

  // One arena per call from the host pool (which keeps it for the next call of the size), so
  // that concurrent calls never share activations. Zeroed, as the kernels expect.
  struct Arena {
    std::unique_ptr<PoolBlock> block;
    float* data() const { return block->as<float>(); }
  };
  Result<Arena> MakeArena(int64_t batch) const {
    const size_t floats = static_cast<size_t>(plan_.arena_floats * batch);
    Arena arena{std::make_unique<PoolBlock>(floats * sizeof(float))};
    if (!*arena.block) {
      return ResourceExhausted("reference backend: no memory for the " +
                               std::to_string(floats * 4 / (1 << 20)) +
                               " MiB activation arena of batch " + std::to_string(batch));
    }
    std::fill(arena.data(), arena.data() + floats, 0.0f);
    return arena;
  }

  void RunSteps(int64_t batch, float* arena) const {
    for (const auto& step : plan_.steps) reference::RunStep(plan_, step, batch, arena, threads_);
  }

  static void ToNhwc(const float* src, const graph::PlanBuffer& buf, int64_t batch, float* arena) {
    float* dst = arena + buf.offset * batch;
    const auto& s = buf.shape;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < s.c; ++c) {
        for (int64_t p = 0; p < s.h * s.w; ++p) {
          dst[(n * s.h * s.w + p) * s.c + c] = src[(n * s.c + c) * s.h * s.w + p];
        }
      }
    }
  }
  static void ToNchw(const graph::PlanBuffer& buf, int64_t batch, const float* arena, float* dst) {
    const float* src = arena + buf.offset * batch;
    const auto& s = buf.shape;
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t c = 0; c < s.c; ++c) {
        for (int64_t p = 0; p < s.h * s.w; ++p) {
          dst[(n * s.c + c) * s.h * s.w + p] = src[(n * s.h * s.w + p) * s.c + c];
        }
      }
    }
  }

  EngineMemory Memory() const override {
    return {static_cast<int64_t>(plan_.weights.size() * sizeof(float)), 0};
  }

  graph::Plan plan_;
  int threads_;
};

TensorInfo Describe(const graph::PlanTensor& t) {
  return TensorInfo{t.name, DataType::kFloat32, Shape(t.nchw.begin(), t.nchw.end())};
}

}  // namespace

Result<LoadedBackend> CreateReferenceBackend(const std::string& model_path,
                                             const EngineOptions& options) {
  if (options.precision != Precision::kFloat32) {
    return Unimplemented("the reference backend runs float32 only");
  }
  Result<graph::Plan> compiled = Internal("not compiled");
  try {
    compiled = graph::CompilePlanFromFile(model_path);
  } catch (const std::exception& e) {
    return Internal("compiling '" + model_path + "' for the reference backend: " + e.what());
  }
  if (!compiled.ok()) return compiled.status();
  graph::Plan plan = std::move(compiled).value();
  LoadedBackend loaded;
  ModelInfo& info = loaded.info;
  info.path = model_path;
  info.backend = "reference";
  info.provider = "cpu";
  info.opset = plan.opset;
  info.producer = plan.producer;
  for (const auto& t : plan.inputs) info.inputs.push_back(Describe(t));
  for (const auto& t : plan.outputs) info.outputs.push_back(Describe(t));
  info.dynamic_batch = plan.fixed_batch < 0;
  info.max_batch = info.dynamic_batch ? options.max_batch : plan.fixed_batch;
  loaded.backend = std::make_unique<ReferenceBackend>(std::move(plan), options.intra_op_threads);
  return loaded;
}

}  // namespace lipsync
