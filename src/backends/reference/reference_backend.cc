// The "reference" backend: compiles the model into a Plan and runs it with the plain CPU kernels.
#include <exception>
#include <new>
#include <vector>

#include "backends/backend.h"
#include "backends/reference/reference_kernels.h"
#include "graph/compiler.h"

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
    // One arena per call, so that concurrent Run() calls never share activations.
    std::vector<float> arena;
    try {
      arena.resize(static_cast<size_t>(plan_.arena_floats * batch));
    } catch (const std::bad_alloc&) {
      return ResourceExhausted("reference backend: no memory for the " +
                               std::to_string(plan_.arena_floats * batch * 4 / (1 << 20)) +
                               " MiB activation arena of batch " + std::to_string(batch));
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].dtype != DataType::kFloat32 || inputs[i].shape.size() != 4 ||
          inputs[i].shape[0] != batch) {
        return InvalidArgument("reference backend: input '" + plan_.inputs[i].name +
                               "' must be float32 NCHW with batch " + std::to_string(batch));
      }
      ToNhwc(inputs[i].as<float>(), plan_.buffers[plan_.inputs[i].buffer], batch, arena.data());
    }
    for (const auto& step : plan_.steps) {
      reference::RunStep(plan_, step, batch, arena.data(), threads_);
    }
    for (size_t i = 0; i < outputs.size(); ++i) {
      const auto& buf = plan_.buffers[plan_.outputs[i].buffer];
      if (outputs[i].dtype != DataType::kFloat32 ||
          outputs[i].byte_size() != static_cast<size_t>(buf.size * batch) * sizeof(float)) {
        return InvalidArgument("reference backend: output '" + plan_.outputs[i].name +
                               "' buffer has the wrong type or size");
      }
      ToNchw(buf, batch, arena.data(), outputs[i].as<float>());
    }
    return Status::Ok();
  }

 private:
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
