// Bad input, garbage, oversized messages, TLS and the HTTP probes: each gets a clear answer and
// the server keeps serving.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <new>
#include <random>
#include <sstream>
#include <stdexcept>

#include "server/core/worker_pool.h"
#include "server/protocols/request_codec.h"
#include "server_test_util.h"

namespace lipsync::server::testing {
namespace {

void ExpectInvalid(TestServer& s, const lipsync::v1::InferRequest& request,
                   const std::string& message_part,
                   grpc::StatusCode code = grpc::StatusCode::INVALID_ARGUMENT) {
  lipsync::v1::InferResponse r;
  auto status = CallInfer(s, request, &r);
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_NE(status.error_message().find(message_part), std::string::npos)
      << "message: " << status.error_message() << "\nwanted: " << message_part;
}

TEST(ServerRobustness, BadRequestsNameTheProblem) {
  auto s = StartServer(Options(4, 100));
  ASSERT_TRUE(s);
  Frames good = MakeFrames(1, 1);

  auto r = good.request;
  r.mutable_frames()->mutable_frames(0)->mutable_face_bgr()->resize(100);
  ExpectInvalid(*s, r, "frame 0: face_bgr has 100 bytes, expected 307200 bytes (320x320 BGR)");

  r = good.request;
  r.mutable_frames()->mutable_frames(0)->mutable_audio()->resize(12);
  ExpectInvalid(*s, r, "frame 0: audio has 12 bytes, expected 32768 bytes (float32 [32,16,16])");

  r = good.request;
  float nan = std::nanf("");
  r.mutable_frames()->mutable_frames(0)->mutable_audio()->replace(40, 4,
                                                                  reinterpret_cast<char*>(&nan), 4);
  ExpectInvalid(*s, r, "frame 0 audio: element 10 is NaN");

  lipsync::v1::InferRequest empty;
  empty.mutable_frames();
  ExpectInvalid(*s, empty, "frames: empty batch");

  ExpectInvalid(*s, MakeFrames(5, 2).request, "batch of 5 exceeds the limit of 4");

  lipsync::v1::InferRequest nothing;
  ExpectInvalid(*s, nothing, "neither tensors nor frames");

  r = good.request;
  r.set_model_name("other-model");
  ExpectInvalid(*s, r, "unknown model 'other-model'", grpc::StatusCode::NOT_FOUND);

  Frames t = MakeTensors(1, 3);
  r = t.request;
  r.mutable_tensors()->mutable_inputs(1)->clear_shape();
  for (int d : {1, 32, 16}) r.mutable_tensors()->mutable_inputs(1)->add_shape(d);
  ExpectInvalid(*s, r, "input 'audio_input': expected shape [N,32,16,16], got [1,32,16]");

  r = t.request;
  r.mutable_tensors()->mutable_inputs(0)->set_dtype(lipsync::v1::UINT8);
  ExpectInvalid(*s, r, "input 'visual_input': dtype must be FLOAT32 or FLOAT16, got UINT8");

  r = t.request;
  r.mutable_tensors()->mutable_inputs(0)->mutable_data()->resize(1000);
  ExpectInvalid(*s, r, "input 'visual_input': 1000 bytes of data, expected 2457600 bytes");

  r = t.request;
  r.mutable_tensors()->mutable_inputs(0)->set_name("pixels");
  ExpectInvalid(*s, r, "the model has no input 'pixels'");

  // After all that, a good request still works.
  lipsync::v1::InferResponse ok;
  EXPECT_TRUE(CallInfer(*s, good.request, &ok).ok());
  EXPECT_GE(s->server->metrics().requests("Infer", "INVALID_ARGUMENT"), 9u);
}

TEST(ServerRobustness, KServeBadInputs) {
  auto s = StartServer(Options(4, 100));
  ASSERT_TRUE(s);
  Frames t = MakeTensors(1, 3);
  inference::ModelInferRequest request;
  request.set_model_name("lipsync");
  for (const auto& w : t.request.tensors().inputs()) {
    auto* in = request.add_inputs();
    in->set_name(w.name());
    in->set_datatype("FP32");
    for (int64_t d : w.shape()) in->add_shape(d);
    request.add_raw_input_contents(w.data());
  }
  auto call = [&](const inference::ModelInferRequest& req) {
    grpc::ClientContext ctx;
    inference::ModelInferResponse resp;
    return s->kserve->ModelInfer(&ctx, req, &resp);
  };
  auto bad = request;
  bad.mutable_inputs(1)->set_datatype("INT8");
  auto st = call(bad);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message(), "input 'audio_input': datatype must be FP32 or FP16, got 'INT8'");
  bad = request;
  bad.mutable_raw_input_contents()->RemoveLast();
  EXPECT_EQ(call(bad).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  bad = request;
  bad.set_model_name("nope");
  EXPECT_EQ(call(bad).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(call(request).ok());
}

TEST(ServerRobustness, OversizedMessageIsRefused) {
  ServerOptions o = Options(4, 100);
  o.max_message_bytes = 1 << 20;  // a frame-form request of 4 frames is about 1.4 MB
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  lipsync::v1::InferResponse r;
  auto status = CallInfer(*s, MakeFrames(4, 1).request, &r);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // One frame answered as an image (300 KB) fits both ways.
  auto small = MakeFrames(1, 1).request;
  small.set_output_form(lipsync::v1::OUTPUT_IMAGE);
  EXPECT_TRUE(CallInfer(*s, small, &r).ok());
}

TEST(ServerRobustness, StreamWithGarbageAnswersEachRequestAndGoesOn) {
  auto s = StartServer(Options(2, 100));
  ASSERT_TRUE(s);
  grpc::ClientContext ctx;
  auto stream = s->stub->StreamInfer(&ctx);
  lipsync::v1::StreamInferRequest m;
  m.set_sequence(1);
  m.mutable_request()->mutable_frames()->add_frames()->set_face_bgr("garbage");
  ASSERT_TRUE(stream->Write(m));
  m.set_sequence(2);
  *m.mutable_request() = MakeFrames(1, 5).request;
  ASSERT_TRUE(stream->Write(m));
  stream->WritesDone();
  lipsync::v1::StreamInferResponse r;
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.sequence(), 1u);
  EXPECT_EQ(r.code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_NE(r.message().find("face_bgr has 7 bytes"), std::string::npos) << r.message();
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.sequence(), 2u);
  EXPECT_EQ(r.code(), 0);
  EXPECT_TRUE(stream->Finish().ok());
}

// Seeded random mutations of valid requests, decoded directly and sent to a live server: every
// one must be answered (with data or a clear error), and the server must stay up.
TEST(ServerRobustness, MutatedRequestsNeverCrashTheDecoderOrServer) {
  auto s = StartServer(Options(2, 100));
  ASSERT_TRUE(s);
  auto spec = ModelSpec::FromEngine(*s->engine, "lipsync", 2);
  ASSERT_TRUE(spec.ok());
  std::mt19937 rng(12345);
  const std::string seeds[] = {MakeFrames(1, 1).request.SerializeAsString(),
                               MakeTensors(1, 2).request.SerializeAsString()};
  int parsed = 0, decoded = 0, sent = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  for (int i = 0; i < 3000 && std::chrono::steady_clock::now() < end; ++i) {
    std::string bytes = seeds[i % 2];
    const int edits = 1 + rng() % 8;
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          bytes[pos] = static_cast<char>(rng());
          break;  // flip a byte
        case 1:
          bytes.resize(pos);
          break;  // truncate
        case 2:
          bytes.insert(pos, std::string(1 + rng() % 16, char(rng())));
          break;  // insert
        case 3:
          bytes[pos % std::min<size_t>(bytes.size(), 64)] ^= 0x80;
          break;  // damage header
      }
      if (bytes.empty()) bytes = "x";
    }
    lipsync::v1::InferRequest request;
    if (!request.ParseFromString(bytes)) continue;
    ++parsed;
    auto items = DecodeInferRequest(*spec, request);
    if (items.ok())
      ++decoded;
    else
      EXPECT_FALSE(items.status().message().empty());
    if (i % 10 == 0) {  // a share of them through the network too
      lipsync::v1::InferResponse r;
      grpc::Status st = CallInfer(*s, request, &r, 5000);
      EXPECT_NE(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
      EXPECT_NE(st.error_code(), grpc::StatusCode::INTERNAL) << st.error_message();
      ++sent;
    }
  }
  EXPECT_GT(parsed, 100);
  EXPECT_GT(sent, 10);
  lipsync::v1::InferResponse r;
  EXPECT_TRUE(CallInfer(*s, MakeFrames(1, 1).request, &r).ok());
  std::printf("mutations: %d parsed, %d decoded as valid, %d sent\n", parsed, decoded, sent);
}

TEST(ServerRobustness, HttpMetricsAndProbes) {
  ServerOptions o = Options(2, 100);
  o.metrics_listen = "127.0.0.1:0";
  auto s = StartServer(o);
  ASSERT_TRUE(s);
  lipsync::v1::InferResponse r;
  ASSERT_TRUE(CallInfer(*s, MakeFrames(2, 1).request, &r).ok());
  httplib::Client http("127.0.0.1", s->server->metrics_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("lipsync_requests_total{method=\"Infer\",code=\"OK\"} 1"),
            std::string::npos)
      << metrics->body;
  EXPECT_NE(metrics->body.find("lipsync_frames_total 2"), std::string::npos);
  EXPECT_NE(metrics->body.find("lipsync_queue_seconds_count 2"), std::string::npos);
  EXPECT_NE(metrics->body.find("lipsync_compute_seconds_bucket"), std::string::npos);
  EXPECT_EQ(http.Get("/healthz")->status, 200);
  EXPECT_EQ(http.Get("/readyz")->status, 200);
}

// A port another server listens on is refused with an error naming it, for gRPC and for HTTP,
// and the server that holds it keeps serving.
TEST(ServerRobustness, PortsInUseAreRefused) {
  ServerOptions first_options = Options(2, 100);
  first_options.metrics_listen = "127.0.0.1:0";
  auto first = StartServer(first_options);
  ASSERT_TRUE(first);
  const std::string grpc_taken = first->address();
  const std::string http_taken = "127.0.0.1:" + std::to_string(first->server->metrics_port());

  auto expect_refused = [&](const ServerOptions& o, const std::string& message) {
    auto second = Server::Start(first->engine.get(), o);
    ASSERT_FALSE(second.ok()) << "a second server started: " << message;
    EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(second.status().message().find(message), std::string::npos)
        << second.status().message();
  };
  ServerOptions o = Options(2, 100);
  o.listen = grpc_taken;
  expect_refused(o, "cannot listen on " + grpc_taken);
  o = Options(2, 100);
  o.metrics_listen = http_taken;
  expect_refused(o, "cannot listen for HTTP on " + http_taken);

  lipsync::v1::InferResponse r;
  EXPECT_TRUE(CallInfer(*first, MakeFrames(1, 1).request, &r).ok());
  httplib::Client http("127.0.0.1", first->server->metrics_port());
  auto ready = http.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
}

class TlsFiles {
 public:
  TlsFiles() {
    dir_ = std::filesystem::temp_directory_path() / ("lipsync_tls_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
    const std::string cmd =
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
        "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
        key() + " -out " + cert() + " 2>/dev/null";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  ~TlsFiles() { std::filesystem::remove_all(dir_); }
  bool ok() const { return ok_; }
  std::string key() const { return (dir_ / "key.pem").string(); }
  std::string cert() const { return (dir_ / "cert.pem").string(); }

 private:
  std::filesystem::path dir_;
  bool ok_ = false;
};

TEST(ServerRobustness, TlsServesTlsClientsAndRefusesPlaintext) {
  TlsFiles tls;
  ASSERT_TRUE(tls.ok()) << "openssl could not make a certificate";
  ServerOptions o = Options(2, 100);
  o.tls_cert_file = tls.cert();
  o.tls_key_file = tls.key();
  auto s = StartServer(o);  // its own channel is plaintext
  ASSERT_TRUE(s);
  lipsync::v1::InferResponse r;
  auto plaintext = CallInfer(*s, MakeFrames(1, 1).request, &r, 3000);
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE);

  std::ifstream in(tls.cert());
  std::stringstream pem;
  pem << in.rdbuf();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = pem.str();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(s->address(), grpc::SslCredentials(ssl), args);
  auto stub = lipsync::v1::LipSync::NewStub(channel);
  grpc::ClientContext ctx;
  Frames f = MakeFrames(1, 2);
  auto status = stub->Infer(&ctx, f.request, &r);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(MaxAbsDiff(r.output().data(), EngineOutput(*s->engine, f.engine_inputs)), 0.0);
}

TEST(ServerRobustness, StartupErrorsAreClear) {
  EngineOptions eo;
  eo.max_batch = 8;
  auto engine = Engine::Create(kTestData + "/tiny.onnx", eo);
  ASSERT_TRUE(engine.ok());
  ServerOptions o = Options(16, 100);
  auto s = Server::Start(engine->get(), o);
  EXPECT_EQ(s.status().message(), "largest batch 16 exceeds the model's limit of 8");
  o = Options(4, 100);
  o.batching.preferred_batch = 5;
  EXPECT_EQ(Server::Start(engine->get(), o).status().message(),
            "preferred batch 5 must be between 1 and the largest batch (4)");
  o = Options(4, 100, 3);
  EXPECT_EQ(Server::Start(engine->get(), o).status().message(),
            "the queue (3 requests) must hold at least one largest batch (4)");
  o = Options(2, 100);
  o.listen = "not-an-address";
  EXPECT_EQ(Server::Start(engine->get(), o).status().code(), StatusCode::kInvalidArgument);
  o = Options(2, 100);
  o.tls_cert_file = "/nonexistent/cert.pem";
  o.tls_key_file = "/nonexistent/key.pem";
  EXPECT_EQ(Server::Start(engine->get(), o).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace lipsync::server::testing

namespace lipsync::server {
namespace {

// Work that throws (a failed allocation) is that work's failure: the pool's thread lives on and
// runs what comes next.
TEST(ServerRobustness, AThrowingWorkerTaskLeavesThePoolServing) {
  WorkerPool pool(1);
  std::promise<void> thrown, next;
  pool.Post([&] {
    thrown.set_value();
    throw std::bad_alloc();
  });
  pool.Post([&] { next.set_value(); });
  thrown.get_future().wait();
  next.get_future().wait();  // hangs (the test times out) if the first task ended the thread

  const Status caught = runtime::CatchAll("test", []() -> Status { throw std::bad_alloc(); });
  EXPECT_EQ(caught.code(), StatusCode::kResourceExhausted);
  const Status other =
      runtime::CatchAll("test", []() -> Status { throw std::runtime_error("broken"); });
  EXPECT_EQ(other.code(), StatusCode::kInternal);
  EXPECT_NE(other.message().find("broken"), std::string::npos) << other.message();
}

}  // namespace
}  // namespace lipsync::server
