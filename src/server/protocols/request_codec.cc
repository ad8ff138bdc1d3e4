#include "server/protocols/request_codec.h"

#include <cstring>

namespace lipsync::server {
namespace {

std::string Bytes(size_t n) { return std::to_string(n) + " bytes"; }

// Copies (and widens from float16) `count` elements of one frame into a new [1, ...] tensor.
Result<Tensor> ReadFrameTensor(const TensorInfo& info, const void* data, DataType wire_type,
                               int64_t item_elements, const std::string& what) {
  Shape shape = info.shape;
  shape[0] = 1;
  Tensor t = Tensor::Uninitialized(info.dtype, shape);
  if (wire_type == info.dtype) {
    std::memcpy(t.data(), data, t.byte_size());
  } else if (wire_type == DataType::kFloat16 && info.dtype == DataType::kFloat32) {
    const auto* src = static_cast<const char*>(data);  // wire bytes need not be aligned
    for (int64_t i = 0; i < item_elements; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      t.data_as<float>()[i] = HalfToFloat(h);
    }
  } else {
    return InvalidArgument(what + ": " + DataTypeName(wire_type) + " data for a " +
                           DataTypeName(info.dtype) + " input");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckFinite(t.view(), what));
  return t;
}

Status CheckBatch(const ModelSpec& spec, int64_t n, const std::string& what) {
  if (n < 1) return InvalidArgument(what + ": empty batch");
  if (n > spec.max_request_frames) {
    return InvalidArgument(what + ": batch of " + std::to_string(n) + " exceeds the limit of " +
                           std::to_string(spec.max_request_frames) + " frames per request");
  }
  return Status::Ok();
}

Result<DataType> WireType(lipsync::v1::DataType t, const std::string& what) {
  switch (t) {
    case lipsync::v1::FLOAT32:
      return DataType::kFloat32;
    case lipsync::v1::FLOAT16:
      return DataType::kFloat16;
    default:
      return InvalidArgument(what + ": dtype must be FLOAT32 or FLOAT16, got " +
                             lipsync::v1::DataType_Name(t));
  }
}

Result<DataType> KServeType(const std::string& t, const std::string& what) {
  if (t == "FP32") return DataType::kFloat32;
  if (t == "FP16") return DataType::kFloat16;
  return InvalidArgument(what + ": datatype must be FP32 or FP16, got '" + t + "'");
}

// Splits named batch tensors [N, ...] into N frames. `tensors` holds, per model input, its wire
// type, shape and data.
struct WireTensor {
  DataType dtype;
  Shape shape;
  const char* data;
  size_t bytes;
};

Result<std::vector<BatchItem>> SplitTensors(const ModelSpec& spec,
                                            const std::vector<WireTensor>& tensors) {
  int64_t batch = -1;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const TensorInfo& info = spec.inputs[i];
    const WireTensor& w = tensors[i];
    const std::string what = "input '" + info.name + "'";
    bool shape_ok = w.shape.size() == info.shape.size();
    for (size_t d = 1; shape_ok && d < w.shape.size(); ++d) shape_ok = w.shape[d] == info.shape[d];
    if (!shape_ok || w.shape.empty()) {
      return InvalidArgument(what + ": expected shape " + ShapeToString(info.shape) + ", got " +
                             ShapeToString(w.shape, false));
    }
    LIPSYNC_RETURN_IF_ERROR(CheckBatch(spec, w.shape[0], what));
    if (batch >= 0 && w.shape[0] != batch) {
      return InvalidArgument(what + ": batch " + std::to_string(w.shape[0]) +
                             " differs from the other inputs' " + std::to_string(batch));
    }
    batch = w.shape[0];
    const size_t want = static_cast<size_t>(ElementCount(w.shape)) * DataTypeSize(w.dtype);
    if (w.bytes != want) {
      return InvalidArgument(what + ": " + Bytes(w.bytes) + " of data, expected " + Bytes(want) +
                             " for " + DataTypeName(w.dtype) + " " + ShapeToString(w.shape));
    }
  }
  std::vector<BatchItem> items(static_cast<size_t>(batch));
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const int64_t per = spec.InputItemElements(i);
    const size_t row_bytes = static_cast<size_t>(per) * DataTypeSize(tensors[i].dtype);
    for (int64_t r = 0; r < batch; ++r) {
      LIPSYNC_ASSIGN_OR_RETURN(
          Tensor t,
          ReadFrameTensor(spec.inputs[i], tensors[i].data + r * row_bytes, tensors[i].dtype, per,
                          "input '" + spec.inputs[i].name + "' frame " + std::to_string(r)));
      items[r].inputs.push_back(std::move(t));
    }
  }
  return items;
}

// Frames stay faces: the engine builds the visual input (RunFrames), on the GPU where it can.
Result<std::vector<BatchItem>> DecodeFrames(const ModelSpec& spec,
                                            const lipsync::v1::FrameBatch& frames,
                                            lipsync::v1::OutputForm output_form) {
  if (!spec.frame_form) {
    return InvalidArgument(
        "this model does not take frames (it needs a [N,6,S,S] visual input "
        "and one audio input); send tensors");
  }
  LIPSYNC_RETURN_IF_ERROR(CheckBatch(spec, frames.frames_size(), "frames"));
  const int s = spec.layout.inner_size;
  const size_t face_bytes = static_cast<size_t>(s) * s * 3;
  const int64_t audio_elements = spec.InputItemElements(spec.audio_index);
  const size_t audio_bytes = static_cast<size_t>(audio_elements) * 4;
  std::vector<BatchItem> items;
  for (int f = 0; f < frames.frames_size(); ++f) {
    const auto& frame = frames.frames(f);
    const std::string what = "frame " + std::to_string(f);
    if (frame.face_bgr().size() != face_bytes) {
      return InvalidArgument(what + ": face_bgr has " + Bytes(frame.face_bgr().size()) +
                             ", expected " + Bytes(face_bytes) + " (" + std::to_string(s) + "x" +
                             std::to_string(s) + " BGR)");
    }
    if (frame.audio().size() != audio_bytes) {
      return InvalidArgument(what + ": audio has " + Bytes(frame.audio().size()) + ", expected " +
                             Bytes(audio_bytes) + " (float32 " +
                             ShapeToString(Shape(spec.inputs[spec.audio_index].shape.begin() + 1,
                                                 spec.inputs[spec.audio_index].shape.end())) +
                             ")");
    }
    BatchItem item;
    item.form =
        output_form == lipsync::v1::OUTPUT_IMAGE ? ItemForm::kFramesToImages : ItemForm::kFrames;
    Tensor face = Tensor::Uninitialized(DataType::kUInt8, {1, s, s, 3});
    std::memcpy(face.data(), frame.face_bgr().data(), face_bytes);
    LIPSYNC_ASSIGN_OR_RETURN(Tensor audio,
                             ReadFrameTensor(spec.inputs[spec.audio_index], frame.audio().data(),
                                             DataType::kFloat32, audio_elements, what + " audio"));
    item.inputs.push_back(std::move(face));
    item.inputs.push_back(std::move(audio));
    items.push_back(std::move(item));
  }
  return items;
}

}  // namespace

Result<ModelSpec> ModelSpec::FromEngine(const Engine& engine, std::string name,
                                        int64_t max_request_frames) {
  const ModelInfo& info = engine.info();
  ModelSpec spec;
  spec.name = std::move(name);
  spec.inputs = info.inputs;
  spec.outputs = info.outputs;
  spec.max_request_frames = std::min<int64_t>(max_request_frames, info.max_batch);
  for (const auto& t : info.inputs) {
    for (size_t d = 1; d < t.shape.size(); ++d) {
      if (t.shape[d] < 0) {
        return Unimplemented("input '" + t.name + "' has a dynamic dimension " + std::to_string(d) +
                             "; the server needs fixed frame shapes");
      }
    }
  }
  const FrameFormInfo& form = engine.frame_form();
  spec.frame_form = form.supported;
  spec.visual_index = form.visual_index;
  spec.audio_index = form.audio_index;
  spec.layout = form.layout;
  return spec;
}

int64_t ModelSpec::InputItemElements(size_t i) const {
  return ElementCount(Shape(inputs[i].shape.begin() + 1, inputs[i].shape.end()));
}

Result<std::vector<BatchItem>> DecodeInferRequest(const ModelSpec& spec,
                                                  const lipsync::v1::InferRequest& request) {
  if (!request.model_name().empty() && request.model_name() != spec.name) {
    return Status(StatusCode::kNotFound, "unknown model " + Quoted(request.model_name()) +
                                             " (this server serves '" + spec.name + "')");
  }
  if (request.has_frames()) return DecodeFrames(spec, request.frames(), request.output_form());
  if (!request.has_tensors()) {
    return InvalidArgument("the request has neither tensors nor frames");
  }
  const auto& tensors = request.tensors();
  if (tensors.inputs_size() != static_cast<int>(spec.inputs.size())) {
    return InvalidArgument("expected " + std::to_string(spec.inputs.size()) +
                           " input tensors, got " + std::to_string(tensors.inputs_size()));
  }
  std::vector<WireTensor> wire(spec.inputs.size());
  std::vector<bool> seen(spec.inputs.size(), false);
  for (const auto& t : tensors.inputs()) {
    size_t i = 0;
    while (i < spec.inputs.size() && spec.inputs[i].name != t.name()) ++i;
    if (i == spec.inputs.size()) {
      return InvalidArgument("the model has no input " + Quoted(t.name()));
    }
    if (seen[i]) return InvalidArgument("input " + Quoted(t.name()) + " given twice");
    seen[i] = true;
    LIPSYNC_ASSIGN_OR_RETURN(DataType dtype, WireType(t.dtype(), "input " + Quoted(t.name())));
    wire[i] = WireTensor{dtype, Shape(t.shape().begin(), t.shape().end()), t.data().data(),
                         t.data().size()};
  }
  return SplitTensors(spec, wire);
}

Result<std::vector<BatchItem>> DecodeModelInferRequest(
    const ModelSpec& spec, const inference::ModelInferRequest& request) {
  if (request.model_name() != spec.name) {
    return Status(StatusCode::kNotFound, "unknown model " + Quoted(request.model_name()) +
                                             " (this server serves '" + spec.name + "')");
  }
  if (request.inputs_size() != static_cast<int>(spec.inputs.size())) {
    return InvalidArgument("expected " + std::to_string(spec.inputs.size()) + " inputs, got " +
                           std::to_string(request.inputs_size()));
  }
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return InvalidArgument("raw_input_contents has " +
                           std::to_string(request.raw_input_contents_size()) + " entries for " +
                           std::to_string(request.inputs_size()) + " inputs");
  }
  std::vector<WireTensor> wire(spec.inputs.size());
  std::vector<bool> seen(spec.inputs.size(), false);
  for (int k = 0; k < request.inputs_size(); ++k) {
    const auto& t = request.inputs(k);
    size_t i = 0;
    while (i < spec.inputs.size() && spec.inputs[i].name != t.name()) ++i;
    if (i == spec.inputs.size())
      return InvalidArgument("the model has no input " + Quoted(t.name()));
    if (seen[i]) return InvalidArgument("input " + Quoted(t.name()) + " given twice");
    seen[i] = true;
    const std::string what = "input " + Quoted(t.name());
    LIPSYNC_ASSIGN_OR_RETURN(DataType dtype, KServeType(t.datatype(), what));
    Shape shape(t.shape().begin(), t.shape().end());
    if (raw) {
      const std::string& bytes = request.raw_input_contents(k);
      wire[i] = WireTensor{dtype, shape, bytes.data(), bytes.size()};
    } else {
      if (dtype != DataType::kFloat32) {
        return InvalidArgument(what + ": FP16 data must come in raw_input_contents");
      }
      const auto& c = t.contents().fp32_contents();
      wire[i] = WireTensor{dtype, shape, reinterpret_cast<const char*>(c.data()),
                           static_cast<size_t>(c.size()) * 4};
    }
  }
  return SplitTensors(spec, wire);
}

void EncodeInferResponse(const ModelSpec& spec, const Ticket& ticket, lipsync::v1::OutputForm form,
                         lipsync::v1::InferResponse* response) {
  const Tensor& out = ticket.outputs()[0];
  response->set_queue_ms(ticket.max_queue_ms());
  response->set_compute_ms(ticket.compute_ms());
  if (out.dtype() == DataType::kUInt8) {  // frames run with image output: BGR faces already
    const size_t bytes = out.byte_size() / ticket.frames();
    for (size_t f = 0; f < ticket.frames(); ++f) {
      response->add_images(out.data_as<char>() + f * bytes, bytes);
    }
    return;
  }
  if (form == lipsync::v1::OUTPUT_IMAGE) {  // tensor requests that ask for images
    const int s = static_cast<int>(out.shape()[2]);
    const size_t plane = static_cast<size_t>(s) * s;
    for (size_t f = 0; f < ticket.frames(); ++f) {
      std::string* image = response->add_images();
      image->resize(plane * 3);
      OutputToImage(out.data_as<float>() + f * 3 * plane, s,
                    reinterpret_cast<uint8_t*>(image->data()));
    }
    return;
  }
  auto* t = response->mutable_output();
  t->set_name(spec.outputs[0].name);
  t->set_dtype(lipsync::v1::FLOAT32);
  for (int64_t d : out.shape()) t->add_shape(d);
  t->set_data(out.data(), out.byte_size());
}

void EncodeModelInferResponse(const ModelSpec& spec, const Ticket& ticket,
                              inference::ModelInferResponse* response) {
  response->set_model_name(spec.name);
  for (size_t o = 0; o < ticket.outputs().size(); ++o) {
    const Tensor& out = ticket.outputs()[o];
    auto* t = response->add_outputs();
    t->set_name(spec.outputs[o].name);
    t->set_datatype("FP32");
    for (int64_t d : out.shape()) t->add_shape(d);
    response->add_raw_output_contents(out.data(), out.byte_size());
  }
}

inference::ModelInferRequest ToModelInferRequest(const lipsync::v1::TensorBatch& tensors,
                                                 const std::string& model_name) {
  inference::ModelInferRequest request;
  request.set_model_name(model_name);
  for (const auto& t : tensors.inputs()) {
    auto* in = request.add_inputs();
    in->set_name(t.name());
    in->set_datatype("FP32");
    for (int64_t d : t.shape()) in->add_shape(d);
    request.add_raw_input_contents(t.data());
  }
  return request;
}

grpc::Status ToGrpcStatus(const Status& s) {
  using grpc::StatusCode;
  StatusCode code = StatusCode::UNKNOWN;
  switch (s.code()) {
    case lipsync::StatusCode::kOk:
      return grpc::Status::OK;
    case lipsync::StatusCode::kInvalidArgument:
      code = StatusCode::INVALID_ARGUMENT;
      break;
    case lipsync::StatusCode::kNotFound:
      code = StatusCode::NOT_FOUND;
      break;
    case lipsync::StatusCode::kUnavailable:
      code = StatusCode::UNAVAILABLE;
      break;
    case lipsync::StatusCode::kResourceExhausted:
      code = StatusCode::RESOURCE_EXHAUSTED;
      break;
    case lipsync::StatusCode::kFailedPrecondition:
      code = StatusCode::FAILED_PRECONDITION;
      break;
    case lipsync::StatusCode::kDeadlineExceeded:
      code = StatusCode::DEADLINE_EXCEEDED;
      break;
    case lipsync::StatusCode::kCancelled:
      code = StatusCode::CANCELLED;
      break;
    case lipsync::StatusCode::kUnimplemented:
      code = StatusCode::UNIMPLEMENTED;
      break;
    case lipsync::StatusCode::kDataLoss:
      code = StatusCode::DATA_LOSS;
      break;
    case lipsync::StatusCode::kInternal:
      code = StatusCode::INTERNAL;
      break;
  }
  return grpc::Status(code, Bounded(s.message()));
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    default:
      return "UNKNOWN";
  }
}

}  // namespace lipsync::server
