#include "grpc_client.h"

#include <fstream>
#include <random>
#include <sstream>

#include "lipsync/face.h"
#include "server/protocols/request_codec.h"

namespace lipsync::cli {
namespace {

std::string RandomFloats(int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::string bytes(static_cast<size_t>(n) * 4, '\0');
  auto* p = reinterpret_cast<float*>(bytes.data());
  for (int64_t i = 0; i < n; ++i) p[i] = u(rng);
  return bytes;
}

int64_t ItemElements(const lipsync::v1::TensorSpec& spec) {
  int64_t n = 1;
  for (int d = 1; d < spec.shape_size(); ++d) n *= spec.shape(d);
  return n;
}

// Index of the audio input (the one that is not [N,6,S,S]).
int AudioIndex(const lipsync::v1::ModelInfo& info) {
  for (int i = 0; i < info.inputs_size(); ++i) {
    if (!(info.inputs(i).shape_size() == 4 && info.inputs(i).shape(1) == 6)) return i;
  }
  return info.inputs_size() - 1;
}

}  // namespace

Result<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                   const std::string& tls_ca_file) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
              8 << 20);  // answers are large, as in the server
  if (tls_ca_file.empty()) {
    return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  std::ifstream in(tls_ca_file);
  if (!in) return NotFound("cannot read the TLS CA file '" + tls_ca_file + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ss.str();
  return grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args);
}

Result<lipsync::v1::ModelInfo> FetchModelInfo(lipsync::v1::LipSync::Stub& stub, int timeout_ms) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  ctx.set_wait_for_ready(true);  // a server that is still starting gets until the deadline
  lipsync::v1::GetModelInfoRequest request;
  lipsync::v1::ModelInfo info;
  grpc::Status s = stub.GetModelInfo(&ctx, request, &info);
  if (!s.ok()) {
    return Unavailable("GetModelInfo failed: " + s.error_message() + " (code " +
                       std::to_string(s.error_code()) + ")");
  }
  return info;
}

Result<lipsync::v1::InferRequest> MakeInferRequest(const lipsync::v1::ModelInfo& info, int batch,
                                                   bool frame_form, const std::string& face_bgr,
                                                   uint64_t seed) {
  std::mt19937_64 rng(seed);
  lipsync::v1::InferRequest request;
  if (frame_form) {
    const int64_t s = info.frame_size();
    if (s <= 0) return InvalidArgument("the served model does not take frames; use --form tensor");
    const size_t face_bytes = static_cast<size_t>(s) * s * 3;
    if (!face_bgr.empty() && face_bgr.size() != face_bytes) {
      return InvalidArgument("the face must be " + std::to_string(s) + "x" + std::to_string(s));
    }
    const auto& audio = info.inputs(AudioIndex(info));
    for (int b = 0; b < batch; ++b) {
      auto* frame = request.mutable_frames()->add_frames();
      if (face_bgr.empty()) {
        std::string pixels(face_bytes, '\0');
        for (auto& c : pixels) c = static_cast<char>(rng() & 0xff);
        frame->set_face_bgr(std::move(pixels));
      } else {
        frame->set_face_bgr(face_bgr);
      }
      frame->set_audio(RandomFloats(ItemElements(audio), rng));
    }
    return request;
  }
  for (const auto& spec : info.inputs()) {
    auto* t = request.mutable_tensors()->add_inputs();
    t->set_name(spec.name());
    t->set_dtype(lipsync::v1::FLOAT32);
    t->add_shape(batch);
    for (int d = 1; d < spec.shape_size(); ++d) t->add_shape(spec.shape(d));
    t->set_data(RandomFloats(ItemElements(spec) * batch, rng));
  }
  return request;
}

Result<inference::ModelInferRequest> MakeKServeRequest(const lipsync::v1::ModelInfo& info,
                                                       int batch, uint64_t seed) {
  LIPSYNC_ASSIGN_OR_RETURN(auto tensors, MakeInferRequest(info, batch, false, "", seed));
  return server::ToModelInferRequest(tensors.tensors(), info.model_name());
}

}  // namespace lipsync::cli
