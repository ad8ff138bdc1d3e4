// Turning requests into batch items and results into responses, with every check a request needs
// before it may reach the batcher. Decoding never throws; every failure names the problem.
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <vector>

#include "kserve/grpc_predict_v2.pb.h"
#include "lipsync/engine.h"
#include "lipsync/face.h"
#include "lipsync/v1/lipsync.pb.h"
#include "server/core/batcher.h"

namespace lipsync::server {

// What the server knows of the model it serves.
struct ModelSpec {
  std::string name;
  std::vector<TensorInfo> inputs;
  std::vector<TensorInfo> outputs;
  int64_t max_request_frames = 8;
  // Frame form: which input is the visual one, which the audio one, and the crop geometry.
  bool frame_form = false;
  size_t visual_index = 0, audio_index = 1;
  FaceLayout layout;

  static Result<ModelSpec> FromEngine(const Engine& engine, std::string name,
                                      int64_t max_request_frames);
  // Elements of input/output `i` for one frame.
  int64_t InputItemElements(size_t i) const;
};

Result<std::vector<BatchItem>> DecodeInferRequest(const ModelSpec& spec,
                                                  const lipsync::v1::InferRequest& request);
Result<std::vector<BatchItem>> DecodeModelInferRequest(const ModelSpec& spec,
                                                       const inference::ModelInferRequest& request);

// Fills the response from a finished, successful ticket.
void EncodeInferResponse(const ModelSpec& spec, const Ticket& ticket, lipsync::v1::OutputForm form,
                         lipsync::v1::InferResponse* response);
void EncodeModelInferResponse(const ModelSpec& spec, const Ticket& ticket,
                              inference::ModelInferResponse* response);

// The same float32 tensors as a KServe ModelInfer request for `model_name` (clients and tests
// that drive both protocols with one batch).
inference::ModelInferRequest ToModelInferRequest(const lipsync::v1::TensorBatch& tensors,
                                                 const std::string& model_name);

grpc::Status ToGrpcStatus(const Status& status);
// "OK", "INVALID_ARGUMENT", ... for metrics labels.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace lipsync::server
