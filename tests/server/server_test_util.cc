#include "server_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include "lipsync/face.h"
#include "server/protocols/request_codec.h"

namespace lipsync::server::testing {

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

uint64_t FailedRequests(const Metrics& metrics, const std::string& method) {
  uint64_t failed = 0;
  for (int code = static_cast<int>(StatusCode::kInvalidArgument);
       code <= static_cast<int>(StatusCode::kInternal); ++code) {
    failed += metrics.requests(method, StatusCodeName(static_cast<StatusCode>(code)));
  }
  return failed;
}

ServerOptions Options(int max_batch, int delay_us, size_t max_queue) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.batching.max_batch = max_batch;
  o.batching.max_queue_delay = std::chrono::microseconds(delay_us);
  o.batching.max_queue = max_queue;
  o.drain_timeout = std::chrono::milliseconds(5000);
  return o;
}

std::unique_ptr<TestServer> StartServer(ServerOptions options, const std::string& model) {
  auto s = std::make_unique<TestServer>();
  EngineOptions eo;
  eo.intra_op_threads = 1;
  eo.max_batch = 64;
  auto engine = Engine::Create(kTestData + "/" + model, eo);
  EXPECT_TRUE(engine.ok()) << engine.status().ToString();
  if (!engine.ok()) return nullptr;
  s->engine = std::move(*engine);
  auto server = Server::Start(s->engine.get(), options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  if (!server.ok()) return nullptr;
  s->server = std::move(*server);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  s->channel = grpc::CreateCustomChannel(s->address(), grpc::InsecureChannelCredentials(), args);
  s->stub = lipsync::v1::LipSync::NewStub(s->channel);
  s->kserve = inference::GRPCInferenceService::NewStub(s->channel);
  return s;
}

Frames MakeFrames(int n, uint32_t seed, int size) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  Frames f;
  f.engine_inputs.emplace_back(DataType::kFloat32, Shape{n, 6, size, size});
  f.engine_inputs.emplace_back(DataType::kFloat32, Shape{n, 32, 16, 16});
  const auto layout = *FaceLayout::ForInputSize(size);
  const size_t face_bytes = static_cast<size_t>(size) * size * 3;
  for (int i = 0; i < n; ++i) {
    auto* frame = f.request.mutable_frames()->add_frames();
    std::string face(face_bytes, '\0');
    for (auto& c : face) c = static_cast<char>(rng() & 0xff);
    std::vector<float> audio(32 * 16 * 16);
    for (auto& a : audio) a = u(rng);
    FillVisualInput(reinterpret_cast<const uint8_t*>(face.data()), layout,
                    f.engine_inputs[0].data_as<float>() + static_cast<size_t>(i) * 6 * size * size);
    std::memcpy(f.engine_inputs[1].data_as<float>() + i * audio.size(), audio.data(),
                audio.size() * 4);
    frame->set_face_bgr(face);
    frame->set_audio(audio.data(), audio.size() * 4);
  }
  return f;
}

Frames MakeTensors(int n, uint32_t seed) {
  Frames f;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  f.engine_inputs.emplace_back(DataType::kFloat32, Shape{n, 6, 320, 320});
  f.engine_inputs.emplace_back(DataType::kFloat32, Shape{n, 32, 16, 16});
  const char* names[] = {"visual_input", "audio_input"};
  for (int i = 0; i < 2; ++i) {
    Tensor& t = f.engine_inputs[i];
    for (int64_t k = 0; k < t.element_count(); ++k) t.data_as<float>()[k] = u(rng);
    auto* w = f.request.mutable_tensors()->add_inputs();
    w->set_name(names[i]);
    w->set_dtype(lipsync::v1::FLOAT32);
    for (int64_t d : t.shape()) w->add_shape(d);
    w->set_data(t.data(), t.byte_size());
  }
  return f;
}

inference::ModelInferRequest KServeRequest(const Frames& tensors) {
  return ToModelInferRequest(tensors.request.tensors(), "lipsync");
}

Tensor EngineOutput(Engine& engine, const std::vector<Tensor>& inputs) {
  auto out = engine.Run({inputs[0].view(), inputs[1].view()});
  EXPECT_TRUE(out.ok()) << out.status().ToString();
  return std::move((*out)[0]);
}

double MaxAbsDiff(const std::string& bytes, const Tensor& expected) {
  if (bytes.size() != expected.byte_size()) return INFINITY;
  const float* a = reinterpret_cast<const float*>(bytes.data());
  double worst = 0;
  for (int64_t i = 0; i < expected.element_count(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a[i] - expected.data_as<float>()[i])));
  }
  return worst;
}

grpc::Status CallInfer(TestServer& s, const lipsync::v1::InferRequest& request,
                       lipsync::v1::InferResponse* response, int timeout_ms) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
  return s.stub->Infer(&ctx, request, response);
}

}  // namespace lipsync::server::testing
