// `lipsync client`: sends one face (or a generated frame) to a server and writes the result.
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "engine_flags.h"
#include "grpc_client.h"
#include "lipsync/face.h"
#include "lipsync/npy.h"

namespace lipsync::cli {
namespace {

struct ClientArgs {
  std::string target = "127.0.0.1:50051";
  std::string face;
  std::string audio;
  std::string out = "client_out.png";
  std::string form = "frame";
  std::string tls_ca;
  bool demo = false;
  int timeout_ms = 30000;
};

int RunClient(const ClientArgs& a) {
  if (a.face.empty() && !a.demo) return ReportError(InvalidArgument("give --face or --demo"));
  if (a.form != "frame" && a.form != "tensor") {
    return ReportError(InvalidArgument("--form must be frame or tensor"));
  }
  auto channel = MakeChannel(a.target, a.tls_ca);
  if (!channel.ok()) return ReportError(channel.status());
  auto stub = lipsync::v1::LipSync::NewStub(*channel);
  auto info = FetchModelInfo(*stub, a.timeout_ms);
  if (!info.ok()) return ReportError(info.status());
  const int s = static_cast<int>(info->frame_size());

  std::string face_bgr;
  if (!a.face.empty()) {
    if (s <= 0) return ReportError(InvalidArgument("the served model does not take face images"));
    auto layout = FaceLayout::ForInputSize(s);
    auto image = LoadImage(a.face);
    if (!image.ok()) return ReportError(image.status());
    auto inner = PrepareFace(*image, *layout);
    if (!inner.ok()) return ReportError(inner.status());
    face_bgr.assign(inner->bgr.begin(), inner->bgr.end());
  }
  auto request = MakeInferRequest(*info, 1, a.form == "frame", face_bgr, 0);
  if (!request.ok()) return ReportError(request.status());
  if (!a.audio.empty()) {
    auto audio = LoadNpy(a.audio);
    if (!audio.ok()) return ReportError(audio.status());
    auto* frame = request->mutable_frames()->mutable_frames(0);
    if (a.form != "frame" || audio->byte_size() != frame->audio().size()) {
      return ReportError(InvalidArgument("--audio needs --form frame and " +
                                         std::to_string(frame->audio().size() / 4) + " floats"));
    }
    frame->set_audio(audio->data(), audio->byte_size());
  }
  if (a.form == "frame") request->set_output_form(lipsync::v1::OUTPUT_IMAGE);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(a.timeout_ms));
  lipsync::v1::InferResponse response;
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status status = stub->Infer(&ctx, *request, &response);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!status.ok()) {
    std::fprintf(stderr, "error: Infer failed with code %d: %s\n", status.error_code(),
                 status.error_message().c_str());
    return 2;
  }
  Image image{s, s, {}};
  if (response.images_size() == 1) {
    image.bgr.assign(response.images(0).begin(), response.images(0).end());
  } else {
    image.bgr.resize(static_cast<size_t>(s) * s * 3);
    OutputToImage(reinterpret_cast<const float*>(response.output().data().data()), s,
                  image.bgr.data());
  }
  Status saved = SaveImage(a.out, image);
  if (!saved.ok()) return ReportError(saved);
  std::printf("wrote %s; round trip %.2f ms (server: queue %.2f ms, compute %.2f ms)\n",
              a.out.c_str(), ms, response.queue_ms(), response.compute_ms());
  return 0;
}

}  // namespace

void AddClientCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("client", "Send one face to a lipsync server, write the result");
  auto a = std::make_shared<ClientArgs>();
  cmd->add_option("--target", a->target, "server host:port")->capture_default_str();
  cmd->add_option("--face", a->face, "face crop image");
  cmd->add_flag("--demo", a->demo, "send a generated frame instead of --face");
  cmd->add_option("--audio", a->audio, "audio feature window .npy (float32)");
  cmd->add_option("--out,-o", a->out, "output image")->capture_default_str();
  cmd->add_option("--form", a->form, "frame | tensor")->capture_default_str();
  cmd->add_option("--tls-ca", a->tls_ca, "PEM roots to trust (enables TLS)");
  cmd->add_option("--timeout-ms", a->timeout_ms, "deadline")->capture_default_str();
  cmd->callback([=] { *exit_code = RunClient(*a); });
}

}  // namespace lipsync::cli
