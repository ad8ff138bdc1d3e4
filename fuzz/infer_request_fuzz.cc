// Requests to the UNet's server, lipsync.v1 (first byte even) or KServe (odd), the rest of the
// bytes parsed as the message: decoded into batch items or refused with a short message.
#include <cstdint>

#include "fuzz_check.h"
#include "server/protocols/request_codec.h"

namespace {

// What the server knows of a SyncTalk_2D UNet at 320: frames or tensors, up to 4 a request.
const lipsync::server::ModelSpec& Spec() {
  static const lipsync::server::ModelSpec spec = [] {
    using lipsync::DataType;
    lipsync::server::ModelSpec s;
    s.name = "lipsync";
    s.inputs = {{"visual_input", DataType::kFloat32, {-1, 6, 320, 320}},
                {"audio_input", DataType::kFloat32, {-1, 32, 16, 16}}};
    s.outputs = {{"output", DataType::kFloat32, {-1, 3, 320, 320}}};
    s.max_request_frames = 4;
    s.frame_form = true;
    s.layout = *lipsync::FaceLayout::ForInputSize(320);
    return s;
  }();
  return spec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int rest = static_cast<int>(size - 1);
  if (data[0] % 2 == 0) {
    lipsync::v1::InferRequest request;
    if (!request.ParseFromArray(data + 1, rest)) return 0;
    lipsync::fuzz::CheckRefusal(lipsync::server::DecodeInferRequest(Spec(), request).status(),
                                "DecodeInferRequest");
  } else {
    inference::ModelInferRequest request;
    if (!request.ParseFromArray(data + 1, rest)) return 0;
    lipsync::fuzz::CheckRefusal(lipsync::server::DecodeModelInferRequest(Spec(), request).status(),
                                "DecodeModelInferRequest");
  }
  return 0;
}
