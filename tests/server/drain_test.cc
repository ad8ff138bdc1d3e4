// A draining server: every method of every service refuses new calls as UNAVAILABLE, saying why,
// while the calls already open go on, and Shutdown returns only once the last of them has ended.
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "avatar_test_util.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using lipsync::testing::ScratchDir;

// Every method of the services a server with a model and avatars runs, as "/service/method".
std::vector<std::string> EveryMethod() {
  const char* services[] = {"lipsync.v1.LipSync", "inference.GRPCInferenceService",
                            "lipsync.v1.Sessions", "monolithic.MonolithicService",
                            "lipsyncsrv.LipSyncService"};
  std::vector<std::string> paths;
  for (const char* name : services) {
    const auto* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    EXPECT_NE(service, nullptr) << name;
    if (!service) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      paths.push_back("/" + service->full_name() + "/" + service->method(i)->name());
    }
  }
  return paths;
}

// Calls `path` as a stream of one empty message (for a unary method that is its call on the
// wire; an empty message is a valid request of every type), reads what comes back and returns
// the call's status.
grpc::Status CallWithOneEmptyMessage(const std::shared_ptr<grpc::Channel>& channel,
                                     const std::string& path) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto call = stub.PrepareCall(&ctx, path, &cq);
  const auto step = [&](int tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(static_cast<intptr_t>(tag)));
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  step(1);
  grpc::Slice empty("");
  grpc::ByteBuffer message(&empty, 1);
  call->Write(message, reinterpret_cast<void*>(2));
  step(2);  // may fail: the server may have answered already
  call->WritesDone(reinterpret_cast<void*>(3));
  step(3);
  grpc::ByteBuffer answer;  // the answers are read before Finish, which waits for that
  do {
    call->Read(&answer, reinterpret_cast<void*>(5));
  } while (step(5));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  step(4);
  cq.Shutdown();
  return status;
}

TEST(Drain, EveryMethodIsRefusedWhileTheOpenCallsGoOn) {
  ScratchDir avatars;
  ServerOptions options = testing::Options(4, 0);
  options.drain_timeout = std::chrono::seconds(120);
  options.monolithic = true;
  options.lipsyncsrv = true;
  options.monolithic_options.avatars.root = avatars.path();
  auto s = testing::StartServer(options);
  ASSERT_TRUE(s);

  grpc::ClientContext stream_ctx;
  auto stream = s->stub->StreamInfer(&stream_ctx);
  auto send = [&](uint64_t sequence) {
    lipsync::v1::StreamInferRequest request;
    request.set_sequence(sequence);
    *request.mutable_request() = testing::MakeFrames(1, 40 + sequence).request;
    lipsync::v1::StreamInferResponse reply;
    return stream->Write(request) && stream->Read(&reply) && reply.sequence() == sequence &&
           reply.code() == 0;
  };
  ASSERT_TRUE(send(0));  // the stream is open and served

  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    s->server->Shutdown();
    stopped = true;
  });
  // The drain has begun once a plain call is refused.
  ASSERT_TRUE(testing::WaitFor([&] {
    lipsync::v1::InferResponse r;
    return !testing::CallInfer(*s, testing::MakeFrames(1, 9).request, &r, 20000).ok();
  }));
  const auto methods = EveryMethod();
  EXPECT_GE(methods.size(), 20u);
  for (const std::string& path : methods) {
    const grpc::Status status = CallWithOneEmptyMessage(s->channel, path);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << path;
    EXPECT_NE(status.error_message().find("shutting down"), std::string::npos)
        << path << ": " << status.error_message();
  }

  EXPECT_TRUE(send(1)) << "the open stream was not served while draining";
  EXPECT_FALSE(stopped) << "Shutdown returned while a call was still open";
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  stopper.join();
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace lipsync::server
