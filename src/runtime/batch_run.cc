#include "runtime/batch_run.h"

#include <cstring>
#include <memory>

#include "lipsync/memory.h"

namespace lipsync::runtime {
namespace {

size_t RowBytes(const Shape& shape, DataType dtype) {
  size_t bytes = DataTypeSize(dtype);
  for (size_t i = 1; i < shape.size(); ++i) bytes *= static_cast<size_t>(shape[i]);
  return bytes;
}

TensorView Rows(const TensorView& v, int64_t row, int64_t count) {
  TensorView out = v;
  out.shape[0] = count;
  out.data = static_cast<const uint8_t*>(v.data) + row * RowBytes(v.shape, v.dtype);
  return out;
}

MutableTensorView Rows(const MutableTensorView& v, int64_t row, int64_t count) {
  MutableTensorView out = v;
  out.shape[0] = count;
  out.data = static_cast<uint8_t*>(v.data) + row * RowBytes(v.shape, v.dtype);
  return out;
}

// The row of the batch that row `k` of the padded batch reads: padding repeats the last one.
struct Source {
  const BatchPart* part;
  int64_t row;  // in the part's job
};

std::vector<Source> Sources(const std::vector<BatchPart>& parts, int64_t padded) {
  std::vector<Source> rows;
  rows.reserve(static_cast<size_t>(padded));
  for (const BatchPart& p : parts) {
    for (int64_t r = 0; r < p.count; ++r) rows.push_back({&p, p.row + r});
  }
  while (static_cast<int64_t>(rows.size()) < padded) rows.push_back(rows.back());
  return rows;
}

Status NoMemory(int64_t rows) {
  return ResourceExhausted("no memory for a batch of " + std::to_string(rows) +
                           " frames within the host memory limit");
}

// Gathers the rows of one view of every part (`view` picks it) into `dst`.
template <typename View>
void Gather(const std::vector<Source>& rows, View view, uint8_t* dst) {
  for (const Source& s : rows) {
    const TensorView v = view(*s.part->job);
    const size_t bytes = RowBytes(v.shape, v.dtype);
    std::memcpy(dst, static_cast<const uint8_t*>(v.data) + s.row * bytes, bytes);
    dst += bytes;
  }
}

// A job in the tensor form: every input and output of the model, [n,...] each.
Status CheckTensorJob(const Engine& engine, const ModelConfig& config, const Job& job) {
  if (config.frame_form) {
    return InvalidArgument("model '" + config.name + "' takes faces or its visual input, not " +
                           "a view per input");
  }
  const ModelInfo& info = engine.info();
  if (job.inputs.size() != info.inputs.size() || job.outputs.size() != info.outputs.size()) {
    return InvalidArgument("a job needs a view per model input and output");
  }
  const int64_t n = JobRows(job);
  if (n < 1) return InvalidArgument("a job needs at least one frame");
  const auto fits = [n](const auto& view, const TensorInfo& declared) {
    return view.dtype == declared.dtype && !view.shape.empty() && view.shape[0] == n &&
           RowBytes(view.shape, view.dtype) == RowBytes(declared.shape, declared.dtype);
  };
  for (size_t i = 0; i < job.inputs.size(); ++i) {
    if (!fits(job.inputs[i], info.inputs[i])) {
      return InvalidArgument("input '" + info.inputs[i].name + "' does not fit the model");
    }
  }
  for (size_t i = 0; i < job.outputs.size(); ++i) {
    if (!fits(job.outputs[i], info.outputs[i])) {
      return InvalidArgument("output '" + info.outputs[i].name + "' does not fit the model");
    }
  }
  return Status::Ok();
}

// Runs tensor-form parts: every input gathered, every output scattered, row by row.
Status RunTensorParts(Engine& engine, const std::vector<BatchPart>& parts, int64_t padded) {
  const Job& first = *parts.front().job;
  if (parts.size() == 1 && padded == parts.front().count) {  // the job's own buffers
    const BatchPart& p = parts.front();
    std::vector<TensorView> inputs;
    std::vector<MutableTensorView> outputs;
    for (const TensorView& v : p.job->inputs) inputs.push_back(Rows(v, p.row, p.count));
    for (const MutableTensorView& v : p.job->outputs) outputs.push_back(Rows(v, p.row, p.count));
    return engine.Run(inputs, outputs);
  }
  const std::vector<Source> rows = Sources(parts, padded);
  std::vector<std::unique_ptr<PoolBlock>> blocks;
  std::vector<TensorView> inputs;
  std::vector<MutableTensorView> outputs;
  const auto block = [&](const Shape& row_shape, DataType dtype) -> void* {
    Shape shape = row_shape;
    shape[0] = padded;
    blocks.push_back(
        std::make_unique<PoolBlock>(RowBytes(shape, dtype) * static_cast<size_t>(padded)));
    return *blocks.back() ? blocks.back()->as<void>() : nullptr;
  };
  for (size_t i = 0; i < first.inputs.size(); ++i) {
    Shape shape = first.inputs[i].shape;
    void* data = block(shape, first.inputs[i].dtype);
    if (!data) return NoMemory(padded);
    shape[0] = padded;
    Gather(
        rows, [i](const Job& j) { return j.inputs[i]; }, static_cast<uint8_t*>(data));
    inputs.push_back(TensorView{first.inputs[i].dtype, shape, data});
  }
  for (const MutableTensorView& v : first.outputs) {
    Shape shape = v.shape;
    void* data = block(shape, v.dtype);
    if (!data) return NoMemory(padded);
    shape[0] = padded;
    outputs.push_back(MutableTensorView{v.dtype, shape, data});
  }
  LIPSYNC_RETURN_IF_ERROR(engine.Run(inputs, outputs));
  for (size_t o = 0; o < outputs.size(); ++o) {
    const size_t row_bytes = RowBytes(outputs[o].shape, outputs[o].dtype);
    int64_t k = 0;
    for (const BatchPart& p : parts) {
      uint8_t* dst =
          static_cast<uint8_t*>(p.job->outputs[o].data) + static_cast<size_t>(p.row) * row_bytes;
      std::memcpy(dst, static_cast<const uint8_t*>(outputs[o].data) + k * row_bytes,
                  row_bytes * static_cast<size_t>(p.count));
      k += p.count;
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckJob(const Engine& engine, const ModelConfig& config, const Job& job) {
  if (!job.inputs.empty() || !job.outputs.empty()) return CheckTensorJob(engine, config, job);
  if (!config.frame_form) {
    return InvalidArgument("model '" + config.name + "' has no frame form: a job gives a view " +
                           "per input and output");
  }
  const int s = config.layout.inner_size;
  const int64_t n = job.visual.shape.empty() ? 0 : job.visual.shape[0];
  if (n < 1) return InvalidArgument("a job needs at least one frame");
  const auto rank4 = [](const Shape& shape) { return shape.size() == 4; };
  if (job.visual.dtype == DataType::kUInt8) {
    const int64_t side = rank4(job.visual.shape) ? job.visual.shape[1] : -1;
    if (side != s && side != config.layout.crop_size) {
      return InvalidArgument("faces must be [n," + std::to_string(s) + "," + std::to_string(s) +
                             ",3] or crops of " + std::to_string(config.layout.crop_size));
    }
  } else if (job.visual.dtype != DataType::kFloat32 || !rank4(job.visual.shape) ||
             job.visual.shape[1] != 6 || job.visual.shape[2] != s || job.visual.shape[3] != s) {
    return InvalidArgument("the visual input must be float32 [n,6," + std::to_string(s) + "," +
                           std::to_string(s) + "]");
  }
  const Shape& declared = engine.info().inputs[static_cast<size_t>(config.audio_input)].shape;
  if (job.audio.dtype != DataType::kFloat32 || job.audio.shape.empty() || job.audio.shape[0] != n ||
      RowBytes(job.audio.shape, DataType::kFloat32) != RowBytes(declared, DataType::kFloat32)) {
    return InvalidArgument("the audio input must be float32 with one window per frame");
  }
  const bool faces_out = job.output.dtype == DataType::kUInt8;
  const size_t want = faces_out ? static_cast<size_t>(s) * s * 3 : 3 * sizeof(float) * s * s;
  if (job.output.shape.empty() || job.output.shape[0] != n ||
      RowBytes(job.output.shape, job.output.dtype) != want ||
      (!faces_out && job.output.dtype != DataType::kFloat32) ||
      (faces_out && job.visual.dtype != DataType::kUInt8)) {
    return InvalidArgument("the output must be uint8 faces (for faces in) or float32 [n,3,S,S]");
  }
  return Status::Ok();
}

Status RunParts(Engine& engine, const ModelConfig& config, const std::vector<BatchPart>& parts,
                int64_t padded) {
  if (!config.frame_form) return RunTensorParts(engine, parts, padded);
  int64_t n = 0;
  for (const BatchPart& p : parts) n += p.count;
  const Job& first = *parts.front().job;
  const auto visual = [](const Job& j) { return j.visual; };
  const auto audio = [](const Job& j) { return j.audio; };
  // Faces of one size, out in one form: the engine's frame form.
  bool frames = true;
  for (const BatchPart& p : parts) {
    frames = frames && p.job->visual.dtype == DataType::kUInt8 &&
             p.job->visual.shape[1] == first.visual.shape[1] &&
             p.job->output.dtype == first.output.dtype;
  }
  std::vector<TensorView> inputs(engine.info().inputs.size());
  const size_t vi = static_cast<size_t>(config.visual_input);
  const size_t ai = static_cast<size_t>(config.audio_input);
  if (parts.size() == 1 && padded == n) {  // the job's own buffers
    const BatchPart& p = parts.front();
    const MutableTensorView out = Rows(p.job->output, p.row, p.count);
    if (frames) {
      FaceBatch batch{Rows(p.job->visual, p.row, p.count), Rows(p.job->audio, p.row, p.count)};
      return engine.RunFrames(batch, out);
    }
    inputs[vi] = Rows(p.job->visual, p.row, p.count);
    inputs[ai] = Rows(p.job->audio, p.row, p.count);
    return engine.Run(inputs, {out});
  }
  const std::vector<Source> rows = Sources(parts, padded);
  const int s = config.layout.inner_size;
  const size_t plane = static_cast<size_t>(s) * s;
  Shape audio_shape = first.audio.shape;
  audio_shape[0] = padded;
  PoolBlock audio_in(RowBytes(audio_shape, DataType::kFloat32) * static_cast<size_t>(padded));
  if (!audio_in) return NoMemory(padded);
  Gather(rows, audio, audio_in.as<uint8_t>());
  const TensorView audio_view{DataType::kFloat32, audio_shape, audio_in.as<float>()};

  // The batch's output, scattered to the parts afterwards.
  const DataType out_type = frames ? first.output.dtype : DataType::kFloat32;
  const Shape out_shape =
      out_type == DataType::kUInt8 ? Shape{padded, s, s, 3} : Shape{padded, 3, s, s};
  PoolBlock out(RowBytes(out_shape, out_type) * static_cast<size_t>(padded));
  if (!out) return NoMemory(padded);
  const MutableTensorView out_view{out_type, out_shape, out.as<void>()};
  if (frames) {
    Shape face_shape = first.visual.shape;
    face_shape[0] = padded;
    PoolBlock faces(RowBytes(face_shape, DataType::kUInt8) * static_cast<size_t>(padded));
    if (!faces) return NoMemory(padded);
    Gather(rows, visual, faces.as<uint8_t>());
    LIPSYNC_RETURN_IF_ERROR(engine.RunFrames(
        {TensorView{DataType::kUInt8, face_shape, faces.as<uint8_t>()}, audio_view}, out_view));
  } else {
    PoolBlock visual_in(static_cast<size_t>(padded) * 6 * plane * sizeof(float));
    if (!visual_in) return NoMemory(padded);
    float* dst = visual_in.as<float>();
    for (const Source& src : rows) {
      const TensorView& v = src.part->job->visual;
      if (v.dtype == DataType::kFloat32) {
        std::memcpy(dst, v.as<float>() + src.row * 6 * plane, 6 * plane * sizeof(float));
      } else {  // a face: the frame form's input, as the CPU backends build it
        const int64_t side = v.shape[1];
        const size_t stride = static_cast<size_t>(side) * 3;
        const int64_t offset = side == s ? 0 : config.layout.inner_offset;
        const uint8_t* face = v.as<uint8_t>() + static_cast<size_t>(src.row) * stride * side +
                              static_cast<size_t>(offset) * (stride + 3);
        FillVisualInput(face, stride, config.layout, dst);
      }
      dst += 6 * plane;
    }
    inputs[vi] = TensorView{DataType::kFloat32, Shape{padded, 6, s, s}, visual_in.as<float>()};
    inputs[ai] = audio_view;
    LIPSYNC_RETURN_IF_ERROR(engine.Run(inputs, {out_view}));
  }
  // Each part's rows back to its job, as the job asked for them.
  const size_t batch_row = RowBytes(out_shape, out_type);
  int64_t k = 0;
  for (const BatchPart& p : parts) {
    for (int64_t r = 0; r < p.count; ++r, ++k) {
      const uint8_t* src = out.as<uint8_t>() + static_cast<size_t>(k) * batch_row;
      uint8_t* dst =
          static_cast<uint8_t*>(p.job->output.data) +
          static_cast<size_t>(p.row + r) * RowBytes(p.job->output.shape, p.job->output.dtype);
      if (p.job->output.dtype == out_type) {
        std::memcpy(dst, src, batch_row);
      } else {  // float batch, faces wanted
        OutputToImage(reinterpret_cast<const float*>(src), s, dst);
      }
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::runtime
