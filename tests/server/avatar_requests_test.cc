// A request whose avatar is still loading holds no worker of its service: with one worker each,
// the monolithic and lipsyncsrv services answer a request for a loaded avatar while another
// request's load is held on the loader thread (by the registry's before_load hook, on events),
// then answer the held request too once its load goes on; the same for a lipsyncsrv stream. And a
// request whose deadline passed during its load does not run.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "lipsyncsrv_test_util.h"
#include "monolithic/monolithic.grpc.pb.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

using lipsync::testing::ScratchDir;
using testing::kPackage;
using testing::TinyModels;

// Holds the loads of chosen avatars on the loader thread until they are released.
class LoadGate {
 public:
  void Hold(const std::string& id) {
    std::lock_guard lock(mu_);
    held_.insert(id);
  }
  void Release(const std::string& id) {
    {
      std::lock_guard lock(mu_);
      held_.erase(id);
    }
    cv_.notify_all();
  }
  void ReleaseAll() {
    {
      std::lock_guard lock(mu_);
      held_.clear();
    }
    cv_.notify_all();
  }
  // The registry's before_load hook.
  void Enter(const std::string& id) {
    std::unique_lock lock(mu_);
    if (!held_.count(id)) return;
    started_.insert(id);
    cv_.notify_all();
    cv_.wait(lock, [&] { return !held_.count(id); });
  }
  // Whether the load of `id` began (and is held) within a generous minute.
  bool WaitStarted(const std::string& id) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return started_.count(id) > 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> held_, started_;
};

// Releases every held load when the test ends, pass or fail, before the server goes.
struct ReleaseAtEnd {
  std::shared_ptr<LoadGate> gate;
  ~ReleaseAtEnd() { gate->ReleaseAll(); }
};

void ImportAvatar(const ScratchDir& root, const std::string& id) {
  AvatarImportOptions import = TinyModels(root / id);
  import.name = id;
  auto avatar = ImportLipSyncSrvPackage(kPackage, import);
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
}

std::unique_ptr<grpc::ClientContext> Context(int seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  return ctx;
}

// A server with the monolithic and lipsyncsrv services, one worker each, on the avatars under
// `root`, whose loads `gate` may hold.
std::unique_ptr<testing::TestServer> StartGated(const ScratchDir& root,
                                                const std::shared_ptr<LoadGate>& gate) {
  ServerOptions options = testing::Options(1, 0);
  options.batching.preferred_batch = 1;
  options.monolithic = true;
  options.lipsyncsrv = true;
  options.monolithic_options.worker_threads = 1;
  options.lipsyncsrv_options.worker_threads = 1;
  options.monolithic_options.avatars.root = root.path();
  options.monolithic_options.avatars.engine.intra_op_threads = 1;
  options.monolithic_options.avatars.before_load = [gate](const std::string& id) {
    gate->Enter(id);
  };
  return testing::StartServer(options);
}

TEST(AvatarRequests, ALoadInProgressHoldsNoInferenceWorker) {
  auto gate = std::make_shared<LoadGate>();
  ScratchDir root;
  for (const char* id : {"anna", "bob", "carl", "dave"}) ImportAvatar(root, id);
  auto server = StartGated(root, gate);
  ASSERT_TRUE(server);
  ReleaseAtEnd release_at_end{gate};
  auto monolithic = monolithic::MonolithicService::NewStub(server->channel);
  auto lipsyncsrv = lipsyncsrv::LipSyncService::NewStub(server->channel);

  // "anna" loaded first, by a request of each service.
  monolithic::CompositeBatchResponse composite;
  ASSERT_TRUE(
      monolithic
          ->InferBatchComposite(Context(120).get(), testing::MonolithicRequest(1, 1), &composite)
          .ok());
  ASSERT_TRUE(composite.success()) << composite.error();
  lipsyncsrv::InferenceRequest anna;
  anna.set_model_name("anna");
  anna.set_frame_id(1);
  lipsyncsrv::InferenceResponse face;
  ASSERT_TRUE(lipsyncsrv->GenerateInference(Context(120).get(), anna, &face).ok());
  ASSERT_TRUE(face.success()) << face.error();

  // monolithic: "bob" held in its load while "anna" is asked for.
  gate->Hold("bob");
  monolithic::CompositeBatchRequest bob = testing::MonolithicRequest(1, 2);
  bob.set_model_id("bob");
  monolithic::CompositeBatchResponse bob_answer;
  grpc::Status bob_status;
  std::thread bob_call(
      [&] { bob_status = monolithic->InferBatchComposite(Context(120).get(), bob, &bob_answer); });
  EXPECT_TRUE(gate->WaitStarted("bob")) << "the load of 'bob' never began";
  monolithic::CompositeBatchResponse meanwhile;
  const grpc::Status meanwhile_status = monolithic->InferBatchComposite(
      Context(30).get(), testing::MonolithicRequest(1, 3), &meanwhile);
  gate->Release("bob");
  bob_call.join();
  EXPECT_TRUE(meanwhile_status.ok())
      << "a loaded avatar waited for another's load: " << meanwhile_status.error_message();
  EXPECT_TRUE(meanwhile.success()) << meanwhile.error();
  EXPECT_FALSE(meanwhile.model_loaded());
  ASSERT_TRUE(bob_status.ok()) << bob_status.error_message();
  EXPECT_TRUE(bob_answer.success()) << bob_answer.error();
  EXPECT_TRUE(bob_answer.model_loaded());
  EXPECT_EQ(bob_answer.composited_frames_size(), 1);

  // lipsyncsrv: "carl" held in its load while "anna" is asked for.
  gate->Hold("carl");
  lipsyncsrv::InferenceRequest carl;
  carl.set_model_name("carl");
  carl.set_frame_id(2);
  lipsyncsrv::InferenceResponse carl_answer;
  grpc::Status carl_status;
  std::thread carl_call(
      [&] { carl_status = lipsyncsrv->GenerateInference(Context(120).get(), carl, &carl_answer); });
  EXPECT_TRUE(gate->WaitStarted("carl")) << "the load of 'carl' never began";
  lipsyncsrv::InferenceResponse face_meanwhile;
  const grpc::Status face_status =
      lipsyncsrv->GenerateInference(Context(30).get(), anna, &face_meanwhile);
  gate->Release("carl");
  carl_call.join();
  EXPECT_TRUE(face_status.ok()) << "a loaded avatar waited for another's load: "
                                << face_status.error_message();
  EXPECT_TRUE(face_meanwhile.success()) << face_meanwhile.error();
  EXPECT_FALSE(face_meanwhile.auto_loaded());
  ASSERT_TRUE(carl_status.ok()) << carl_status.error_message();
  EXPECT_TRUE(carl_answer.success()) << carl_answer.error();
  EXPECT_TRUE(carl_answer.auto_loaded());
  EXPECT_EQ(carl_answer.frame_id(), 2);

  // lipsyncsrv's stream: its request for "dave" held in its load while "anna" is asked for.
  gate->Hold("dave");
  auto stream_context = Context(120);
  auto stream = lipsyncsrv->StreamInference(stream_context.get());
  lipsyncsrv::InferenceRequest dave;
  dave.set_model_name("dave");
  dave.set_frame_id(3);
  ASSERT_TRUE(stream->Write(dave));
  EXPECT_TRUE(gate->WaitStarted("dave")) << "the load of 'dave' never began";
  lipsyncsrv::InferenceResponse stream_meanwhile;
  const grpc::Status stream_meanwhile_status =
      lipsyncsrv->GenerateInference(Context(30).get(), anna, &stream_meanwhile);
  gate->Release("dave");
  stream->WritesDone();
  lipsyncsrv::InferenceResponse dave_answer;
  const bool answered = stream->Read(&dave_answer);
  const grpc::Status stream_status = stream->Finish();
  EXPECT_TRUE(stream_meanwhile_status.ok())
      << "a loaded avatar waited for a stream's load: " << stream_meanwhile_status.error_message();
  EXPECT_TRUE(stream_meanwhile.success()) << stream_meanwhile.error();
  ASSERT_TRUE(answered);
  ASSERT_TRUE(stream_status.ok()) << stream_status.error_message();
  EXPECT_TRUE(dave_answer.success()) << dave_answer.error();
  EXPECT_TRUE(dave_answer.auto_loaded());
  EXPECT_EQ(dave_answer.frame_id(), 3);
}

// Requests whose calls' deadlines pass while their avatar loads are not run when the load ends:
// the model's time goes to callers still waiting. A monolithic and a lipsyncsrv request wait on
// one held load until both clients have seen their deadlines pass; the server then counts both as
// DEADLINE_EXCEEDED without a frame, and the next request for the avatar runs.
TEST(AvatarRequests, RequestsWhoseDeadlinePassedDuringTheirLoadDoNotRun) {
  auto gate = std::make_shared<LoadGate>();
  ScratchDir root;
  ImportAvatar(root, "bob");
  auto server = StartGated(root, gate);
  ASSERT_TRUE(server);
  ReleaseAtEnd release_at_end{gate};
  auto monolithic = monolithic::MonolithicService::NewStub(server->channel);
  auto lipsyncsrv = lipsyncsrv::LipSyncService::NewStub(server->channel);
  const Metrics& metrics = server->server->metrics();

  gate->Hold("bob");
  monolithic::CompositeBatchRequest composite = testing::MonolithicRequest(2, 2);
  composite.set_model_id("bob");
  lipsyncsrv::BatchInferenceRequest faces;
  faces.set_model_name("bob");
  faces.add_frame_ids(1);
  faces.add_frame_ids(2);
  grpc::Status composite_status, faces_status;
  // Six seconds: time enough for the calls to reach the load on a loaded machine.
  constexpr int kDeadlineS = 6;
  const auto sent = std::chrono::steady_clock::now();
  std::thread composite_call([&] {
    monolithic::CompositeBatchResponse answer;
    composite_status =
        monolithic->InferBatchComposite(Context(kDeadlineS).get(), composite, &answer);
  });
  std::thread faces_call([&] {
    lipsyncsrv::BatchInferenceResponse answer;
    faces_status = lipsyncsrv->GenerateBatchInference(Context(kDeadlineS).get(), faces, &answer);
  });
  EXPECT_TRUE(gate->WaitStarted("bob")) << "the load of 'bob' never began";
  composite_call.join();  // the clients' deadlines passed
  faces_call.join();
  EXPECT_EQ(composite_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << composite_status.error_message();
  EXPECT_EQ(faces_status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << faces_status.error_message();
  // The server's deadline is the client's plus the time the call took to arrive (gRPC sends the
  // time left), so the clients' failing is not yet the server's deadline: the load goes on only
  // once that has passed too, with four seconds to spare.
  std::this_thread::sleep_until(sent + std::chrono::seconds(kDeadlineS + 4));
  const uint64_t frames_before = metrics.frames();
  gate->Release("bob");
  ASSERT_TRUE(testing::WaitFor([&] {
    return metrics.requests("InferBatchComposite", "DEADLINE_EXCEEDED") == 1 &&
           metrics.requests("GenerateBatchInference", "DEADLINE_EXCEEDED") == 1;
  })) << "the late requests were not counted as past their deadlines (answered OK: "
      << metrics.requests("InferBatchComposite", "OK") << " composite, "
      << metrics.requests("GenerateBatchInference", "OK") << " lipsyncsrv)";
  EXPECT_EQ(metrics.frames(), frames_before) << "a late request ran the model";

  monolithic::CompositeBatchResponse next;
  ASSERT_TRUE(monolithic->InferBatchComposite(Context(120).get(), composite, &next).ok());
  EXPECT_TRUE(next.success()) << next.error();
  EXPECT_EQ(next.composited_frames_size(), 2);
  EXPECT_EQ(metrics.frames(), frames_before + 2);
}

}  // namespace
}  // namespace lipsync::server
