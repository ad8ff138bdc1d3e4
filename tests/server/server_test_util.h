// Helpers for the server tests: an in-process server on a free loopback port, requests with known
// inputs, and the engine's own answer for them.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "lipsync/engine.h"
#include "lipsync/v1/lipsync.grpc.pb.h"
#include "server/server.h"

namespace lipsync::server::testing {

const std::string kTestData = LIPSYNC_TEST_DATA_DIR;

struct TestServer {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Server> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<lipsync::v1::LipSync::Stub> stub;
  std::unique_ptr<inference::GRPCInferenceService::Stub> kserve;

  std::string address() const { return "127.0.0.1:" + std::to_string(server->port()); }
};

// Loads tests' tiny.onnx (or `model`) and starts a server with these batching settings.
std::unique_ptr<TestServer> StartServer(ServerOptions options = {},
                                        const std::string& model = "tiny.onnx");
ServerOptions Options(int max_batch, int delay_us, size_t max_queue = 64);

// Polls `done` (a counter of the server's, say) until it holds: false if it never did within
// `limit`, which is generous so that a loaded machine only makes it slower.
bool WaitFor(const std::function<bool()>& done,
             std::chrono::milliseconds limit = std::chrono::seconds(60));

// Calls of `method` that lipsync_requests_total counts under any failure code.
uint64_t FailedRequests(const Metrics& metrics, const std::string& method);

// Frames with seeded random faces and audio; the frame-form request, and the same inputs as the
// engine's float tensors [N,6,S,S] and [N,32,16,16].
struct Frames {
  lipsync::v1::InferRequest request;
  std::vector<Tensor> engine_inputs;
};
Frames MakeFrames(int n, uint32_t seed, int size = 320);
// Tensor-form request with seeded random inputs, and the same inputs as engine tensors.
Frames MakeTensors(int n, uint32_t seed);
// The same tensor-form inputs as a KServe ModelInfer request for the model "lipsync".
inference::ModelInferRequest KServeRequest(const Frames& tensors);

// The engine's output [N,3,S,S] for these inputs, run as one batch.
Tensor EngineOutput(Engine& engine, const std::vector<Tensor>& inputs);
// Largest absolute difference between raw float bytes and a tensor.
double MaxAbsDiff(const std::string& bytes, const Tensor& expected);

grpc::Status CallInfer(TestServer& s, const lipsync::v1::InferRequest& request,
                       lipsync::v1::InferResponse* response, int timeout_ms = 20000);

}  // namespace lipsync::server::testing
