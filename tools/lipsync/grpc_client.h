// What `lipsync client` and `lipsync loadtest` share: channels and request building.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "lipsync/status.h"
#include "lipsync/v1/lipsync.grpc.pb.h"

namespace lipsync::cli {

// Plaintext, or TLS when `tls_ca_file` (PEM roots to trust) is set.
Result<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                   const std::string& tls_ca_file);

Result<lipsync::v1::ModelInfo> FetchModelInfo(lipsync::v1::LipSync::Stub& stub, int timeout_ms);

// A request of `batch` frames. Frame form: `face_bgr` (S*S*3 bytes) repeated, or seeded random
// pixels when empty; audio seeded random. Tensor form: the model's inputs, seeded random.
Result<lipsync::v1::InferRequest> MakeInferRequest(const lipsync::v1::ModelInfo& info, int batch,
                                                   bool frame_form, const std::string& face_bgr,
                                                   uint64_t seed);
// The same inputs as a KServe ModelInferRequest (tensor form, raw_input_contents).
Result<inference::ModelInferRequest> MakeKServeRequest(const lipsync::v1::ModelInfo& info,
                                                       int batch, uint64_t seed);

}  // namespace lipsync::cli
