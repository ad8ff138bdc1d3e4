// lipsyncsrv.LipSyncService over loopback with a C++ client, on an avatar imported from the
// synthetic model package: every RPC, the byte layouts, the served faces against the engine run
// here on the same inputs, batch and stream order, and each error as success=false.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <thread>

#include "lipsync/audio.h"
#include "lipsync/npy.h"
#include "lipsyncsrv/lipsyncsrv.grpc.pb.h"
#include "lipsyncsrv_test_util.h"
#include "server_test_util.h"

namespace lipsync::server {
namespace {

namespace fs = std::filesystem;
using lipsync::testing::ScratchDir;
using lipsync::testing::WriteFile;
using testing::CopyPackage;
using testing::kFace;
using testing::kFrames;
using testing::kPackage;
using testing::RectOf;
using testing::TinyModels;

struct Fixture {
  ScratchDir root;
  std::unique_ptr<testing::TestServer> server;
  std::unique_ptr<lipsyncsrv::LipSyncService::Stub> stub;
};

std::unique_ptr<Fixture> Start(const std::function<void(ServerOptions&)>& adjust = {}) {
  auto f = std::make_unique<Fixture>();
  auto avatar = ImportLipSyncSrvPackage(kPackage, TinyModels(f->root / "anna"));
  EXPECT_TRUE(avatar.ok()) << avatar.status().ToString();
  if (!avatar.ok()) return nullptr;
  // Features to override with, inside the folder: the package's rows reversed.
  auto rows = LoadNpy(kPackage + "/aud_ave.npy");
  Tensor reversed(DataType::kFloat32, rows->shape());
  const int64_t n = rows->shape()[0];
  for (int64_t r = 0; r < n; ++r) {
    std::memcpy(reversed.data_as<float>() + r * 512, rows->data_as<float>() + (n - 1 - r) * 512,
                512 * sizeof(float));
  }
  EXPECT_TRUE(SaveNpy(f->root / "anna/other.npy", reversed.view()).ok());
  WriteFile(f->root / "outside.npy", "not inside the avatar");

  ServerOptions options = testing::Options(1, 0);
  options.batching.preferred_batch = 1;
  options.lipsyncsrv = true;
  options.monolithic_options.avatars.root = f->root.path();
  options.monolithic_options.avatars.engine.intra_op_threads = 1;
  options.monolithic_options.avatars.engine.max_batch = 32;
  if (adjust) adjust(options);
  f->server = testing::StartServer(options);
  if (!f->server) return nullptr;
  EXPECT_EQ(f->server->server->lipsyncsrv_port(), f->server->server->port());
  f->stub = lipsyncsrv::LipSyncService::NewStub(f->server->channel);
  return f;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return ctx;
}

// Milliseconds since `start`, rounded up: what a call that took that long may report at most.
int MsCeil(std::chrono::steady_clock::time_point start) {
  return static_cast<int>(std::ceil(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count()));
}

lipsyncsrv::InferenceResponse Infer(Fixture& f, const std::string& model, int frame,
                                    const char* audio_override = nullptr) {
  lipsyncsrv::InferenceRequest request;
  request.set_model_name(model);
  request.set_frame_id(frame);
  if (audio_override) request.set_audio_override(audio_override);
  lipsyncsrv::InferenceResponse response;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = f.stub->GenerateInference(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();  // errors too come back as OK
  EXPECT_LE(response.processing_time_ms(), MsCeil(start)) << "longer than the whole call";
  return response;
}

// How long the registry took to load `model` (it must be loaded).
int LoadMs(Fixture& f, const std::string& model) {
  auto loaded = f.server->server->avatars()->Find(model);
  EXPECT_NE(loaded, nullptr) << model;
  return loaded ? static_cast<int>(loaded->load_ms) : 0;
}

cv::Mat Decode(const std::string& jpeg) {
  return cv::imdecode(
      cv::Mat(1, static_cast<int>(jpeg.size()), CV_8UC1, const_cast<char*>(jpeg.data())),
      cv::IMREAD_UNCHANGED);
}

int MaxDiff(const cv::Mat& a, const cv::Mat& b) {
  double worst = 0;
  cv::minMaxLoc(cv::abs(a - b) + cv::abs(b - a), nullptr, &worst);
  return static_cast<int>(worst);
}

// The faces of `frames` computed here: crop and mask from the avatar's frames, the windows of
// the feature rows `features`, the UNet at batch 1 per frame, through the same JPEG encoder.
std::vector<cv::Mat> ExpectedFaces(const std::string& avatar_dir, const std::string& features,
                                   const std::vector<int64_t>& frames) {
  std::vector<cv::Mat> out;
  auto avatar = LoadAvatar(avatar_dir);
  EXPECT_TRUE(avatar.ok()) << avatar.status().ToString();
  EngineOptions eo;
  eo.intra_op_threads = 1;
  auto unet = Engine::Create(avatar->model_path(), eo);
  auto rows = LoadNpy(features);
  auto reader = avatar->OpenFrames();
  EXPECT_TRUE(unet.ok() && rows.ok() && reader.ok());
  const auto layout = *FaceLayout::ForInputSize(kFace);
  for (int64_t index : frames) {
    auto frame = (*reader)->Read(index);
    auto crop = CropFace(*frame, avatar->crop_rects()[index], layout);
    auto inner = PrepareFace(*crop, layout);
    Tensor visual(DataType::kFloat32, {1, 6, kFace, kFace});
    FillVisualInput(inner->bgr.data(), layout, visual.data_as<float>());
    auto audio = AudioWindowsFromSequence(*rows, {index});
    EXPECT_TRUE(audio.ok());
    auto output = (*unet)->Run({visual.view(), audio->view()});
    EXPECT_TRUE(output.ok());
    cv::Mat face(kFace, kFace, CV_8UC3);
    OutputToImage((*output)[0].data_as<float>(), kFace, face.data);
    std::vector<uint8_t> jpeg;
    cv::imencode(".jpg", face, jpeg, {cv::IMWRITE_JPEG_QUALITY, 95});
    out.push_back(cv::imdecode(jpeg, cv::IMREAD_UNCHANGED));
  }
  return out;
}

// Same pixels through the same encoder: equal up to a step of float rounding in the model.
constexpr int kFaceTolerance = 2;

TEST(LipSyncSrv, GenerateInferenceServesTheFaceAndWhereItGoes) {
  auto f = Start();
  ASSERT_TRUE(f);
  const auto expected = ExpectedFaces(f->root / "anna", kPackage + "/aud_ave.npy", {0, 4});
  auto first = Infer(*f, "anna", 4);
  ASSERT_TRUE(first.success()) << first.error();
  EXPECT_FALSE(first.has_error());
  EXPECT_TRUE(first.auto_loaded());
  EXPECT_EQ(first.model_name(), "anna");
  EXPECT_EQ(first.frame_id(), 4);
  EXPECT_EQ(first.prediction_shape(), "320x320x3");
  EXPECT_GE(first.processing_time_ms(), LoadMs(*f, "anna"))
      << "the call's time leaves out the load";
  cv::Mat face = Decode(first.prediction_data());
  ASSERT_FALSE(face.empty()) << "prediction_data is not an image";
  EXPECT_EQ(face.rows, kFace);
  EXPECT_EQ(face.cols, kFace);
  EXPECT_EQ(face.channels(), 3);
  EXPECT_LE(MaxDiff(face, expected[1]), kFaceTolerance);
  const CropRect r = RectOf(4);
  ASSERT_EQ(first.bounds_size(), 6);
  const std::vector<float> bounds(first.bounds().begin(), first.bounds().end());
  EXPECT_EQ(bounds,
            (std::vector<float>{static_cast<float>(r.x1), static_cast<float>(r.y1),
                                static_cast<float>(r.x2), static_cast<float>(r.y2),
                                static_cast<float>(r.width()), static_cast<float>(r.height())}));

  auto second = Infer(*f, "anna", 0);
  ASSERT_TRUE(second.success()) << second.error();
  EXPECT_FALSE(second.auto_loaded());
  EXPECT_LE(MaxDiff(Decode(second.prediction_data()), expected[0]), kFaceTolerance);
}

TEST(LipSyncSrv, AudioOverrideNamesAnotherFeaturesFile) {
  auto f = Start();
  ASSERT_TRUE(f);
  const auto expected = ExpectedFaces(f->root / "anna", f->root / "anna/other.npy", {2});
  const auto plain = ExpectedFaces(f->root / "anna", kPackage + "/aud_ave.npy", {2});
  ASSERT_GT(MaxDiff(expected[0], plain[0]), 10) << "the audio does not move the face";
  auto response = Infer(*f, "anna", 2, "other.npy");
  ASSERT_TRUE(response.success()) << response.error();
  EXPECT_LE(MaxDiff(Decode(response.prediction_data()), expected[0]), kFaceTolerance);
}

TEST(LipSyncSrv, BatchAnswersEachFrameInOrder) {
  auto f = Start();
  ASSERT_TRUE(f);
  const std::vector<int64_t> frames = {5, 0, 3, 3};
  const auto expected = ExpectedFaces(f->root / "anna", kPackage + "/aud_ave.npy", frames);
  lipsyncsrv::BatchInferenceRequest request;
  request.set_model_name("anna");
  for (int64_t i : {5, 0, 99, 3, 3}) request.add_frame_ids(static_cast<int32_t>(i));
  lipsyncsrv::BatchInferenceResponse response;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(f->stub->GenerateBatchInference(Context().get(), request, &response).ok());
  const int wall_ms = MsCeil(start);
  ASSERT_EQ(response.responses_size(), 5);
  // The call's time covers each frame's (the frames ran together) and lies within the call.
  EXPECT_LE(response.total_processing_time_ms(), wall_ms);
  for (const auto& r : response.responses()) {
    EXPECT_GE(response.total_processing_time_ms(), r.processing_time_ms());
    EXPECT_GE(r.processing_time_ms(), LoadMs(*f, "anna"));  // this call loaded the avatar
  }
  size_t next = 0;
  for (int i = 0; i < 5; ++i) {
    const auto& r = response.responses(i);
    EXPECT_EQ(r.frame_id(), request.frame_ids(i));
    EXPECT_EQ(r.model_name(), "anna");
    if (request.frame_ids(i) == 99) {
      EXPECT_FALSE(r.success());
      EXPECT_NE(r.error().find("frame_id 99 is out of range"), std::string::npos) << r.error();
      EXPECT_NE(r.error().find("0..5"), std::string::npos) << r.error();
      EXPECT_TRUE(r.prediction_data().empty());
      continue;
    }
    ASSERT_TRUE(r.success()) << r.error();
    EXPECT_TRUE(r.auto_loaded());
    EXPECT_LE(MaxDiff(Decode(r.prediction_data()), expected[next]), kFaceTolerance) << i;
    EXPECT_EQ(r.bounds(0), RectOf(request.frame_ids(i)).x1);
    ++next;
  }
}

// An avatar whose frames are kept encoded (the package's video frames as PNG) answers the same
// faces, each frame decoded for its crop.
TEST(LipSyncSrv, EncodedFramesAnswerTheSameFaces) {
  auto f = Start([](ServerOptions& o) {
    o.monolithic_options.avatars.frames = stream::FrameStorage::kEncoded;
  });
  ASSERT_TRUE(f);
  const std::vector<int64_t> frames = {5, 0, 3, 4, 1};
  const auto expected = ExpectedFaces(f->root / "anna", kPackage + "/aud_ave.npy", frames);
  lipsyncsrv::BatchInferenceRequest request;
  request.set_model_name("anna");
  for (int64_t i : frames) request.add_frame_ids(static_cast<int32_t>(i));
  lipsyncsrv::BatchInferenceResponse response;
  ASSERT_TRUE(f->stub->GenerateBatchInference(Context().get(), request, &response).ok());
  ASSERT_EQ(response.responses_size(), static_cast<int>(frames.size()));
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto& r = response.responses(static_cast<int>(i));
    ASSERT_TRUE(r.success()) << r.error();
    EXPECT_LE(MaxDiff(Decode(r.prediction_data()), expected[i]), kFaceTolerance) << i;
  }
  auto served_by = f->server->server->avatars()->Find("anna");
  ASSERT_NE(served_by, nullptr);
  EXPECT_EQ(served_by->frames.storage(), stream::FrameStorage::kEncoded);
  EXPECT_TRUE(served_by->avatar.frames_are_video());
}

TEST(LipSyncSrv, BatchesAboveTheLimitAreRefused) {
  auto f = Start();
  ASSERT_TRUE(f);
  lipsyncsrv::BatchInferenceRequest request;
  request.set_model_name("anna");
  for (int i = 0; i <= kLipSyncSrvMaxFrames; ++i) request.add_frame_ids(i % kFrames);
  lipsyncsrv::BatchInferenceResponse response;
  ASSERT_TRUE(f->stub->GenerateBatchInference(Context().get(), request, &response).ok());
  ASSERT_EQ(response.responses_size(), kLipSyncSrvMaxFrames + 1);
  for (const auto& r : response.responses()) {
    EXPECT_FALSE(r.success());
    EXPECT_NE(r.error().find("at most 256 per call"), std::string::npos) << r.error();
  }
}

TEST(LipSyncSrv, StreamAnswersInRequestOrder) {
  auto f = Start();
  ASSERT_TRUE(f);
  auto ctx = Context();
  auto stream = f->stub->StreamInference(ctx.get());
  const std::vector<int> frames = {4, 1, 77, 2, 0, 5};
  for (int frame : frames) {
    lipsyncsrv::InferenceRequest request;
    request.set_model_name("anna");
    request.set_frame_id(frame);
    ASSERT_TRUE(stream->Write(request));
  }
  stream->WritesDone();
  std::vector<lipsyncsrv::InferenceResponse> answers;
  lipsyncsrv::InferenceResponse response;
  while (stream->Read(&response)) answers.push_back(response);
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(answers.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    EXPECT_EQ(answers[i].frame_id(), frames[i]) << i;
    EXPECT_EQ(answers[i].success(), frames[i] != 77) << i << ": " << answers[i].error();
    if (answers[i].success()) {
      EXPECT_EQ(answers[i].bounds(0), RectOf(frames[i]).x1);
      EXPECT_EQ(Decode(answers[i].prediction_data()).rows, kFace);
    }
  }
  EXPECT_TRUE(answers[0].auto_loaded());
  EXPECT_FALSE(answers[1].auto_loaded());
}

TEST(LipSyncSrv, CancelledStreamLeavesTheServerServing) {
  auto f = Start();
  ASSERT_TRUE(f);
  {
    auto ctx = Context();
    auto stream = f->stub->StreamInference(ctx.get());
    lipsyncsrv::InferenceRequest request;
    request.set_model_name("anna");
    for (int frame : {0, 1, 2}) {
      request.set_frame_id(frame);
      ASSERT_TRUE(stream->Write(request));
    }
    lipsyncsrv::InferenceResponse first;
    ASSERT_TRUE(stream->Read(&first));  // the server is working on the rest
    EXPECT_EQ(first.frame_id(), 0);
    ctx->TryCancel();
    lipsyncsrv::InferenceResponse rest;
    while (stream->Read(&rest)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  auto after = Infer(*f, "anna", 3);
  EXPECT_TRUE(after.success()) << after.error();
}

TEST(LipSyncSrv, ErrorsAreSuccessFalse) {
  auto f = Start();
  ASSERT_TRUE(f);
  struct Case {
    const char* model;
    int frame;
    const char* audio_override;
    const char* message;
  };
  const Case cases[] = {
      {"nobody", 0, nullptr, "unknown model 'nobody'"},
      {"../anna", 0, nullptr, "not an avatar folder name"},
      {"anna", 6, nullptr, "frame_id 6 is out of range: model 'anna' has 6 frames (0..5)"},
      {"anna", -1, nullptr, "frame_id -1 is out of range"},
      {"anna", 0, "../outside.npy", "outside the avatar folder"},
      {"anna", 0, "/etc/hostname", "outside the avatar folder"},
      {"anna", 0, "absent.npy", "not found"},
      {"anna", 0, "avatar.json", "audio_override"},  // neither features nor audio
  };
  for (const auto& c : cases) {
    auto response = Infer(*f, c.model, c.frame, c.audio_override);
    EXPECT_FALSE(response.success()) << c.model << " " << c.frame;
    ASSERT_TRUE(response.has_error());
    EXPECT_NE(response.error().find(c.message), std::string::npos) << response.error();
    EXPECT_TRUE(response.prediction_data().empty());
    EXPECT_EQ(response.bounds_size(), 0);
    EXPECT_EQ(response.model_name(), c.model);
    EXPECT_EQ(response.frame_id(), c.frame);
  }
  EXPECT_TRUE(Infer(*f, "anna", 1).success());  // and the server goes on
  // The metrics count each answer under its outcome (recorded before the answer leaves).
  const Metrics& metrics = f->server->server->metrics();
  EXPECT_EQ(metrics.requests("GenerateInference", "OK"), 1u);
  EXPECT_EQ(metrics.requests("GenerateInference", "NOT_FOUND"), 2u);  // nobody, absent.npy
  EXPECT_EQ(testing::FailedRequests(metrics, "GenerateInference"), std::size(cases));
}

lipsyncsrv::LoadModelResponse Load(Fixture& f, const std::string& model,
                                   const std::string& package) {
  lipsyncsrv::LoadModelRequest request;
  request.set_model_name(model);
  request.set_package_path(package);
  lipsyncsrv::LoadModelResponse response;
  grpc::Status status = f.stub->LoadModel(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

TEST(LipSyncSrv, LoadModel) {
  auto f = Start();
  ASSERT_TRUE(f);
  const auto start = std::chrono::steady_clock::now();
  auto loaded = Load(*f, "anna", "");
  const int wall_ms = MsCeil(start);
  ASSERT_TRUE(loaded.success()) << loaded.error();
  EXPECT_EQ(loaded.model_name(), "anna");
  EXPECT_NE(loaded.message().find("loaded (6 frames)"), std::string::npos) << loaded.message();
  EXPECT_GE(loaded.initialization_time_ms(), LoadMs(*f, "anna"));
  EXPECT_LE(loaded.initialization_time_ms(), wall_ms);
  EXPECT_FALSE(Infer(*f, "anna", 0).auto_loaded());
  auto again = Load(*f, "anna", "");
  EXPECT_NE(again.message().find("already loaded"), std::string::npos) << again.message();

  // Bad package paths and broken packages: success=false, and no avatar folder appears.
  auto missing = Load(*f, "bob", f->root / "no-such-package");
  EXPECT_FALSE(missing.success());
  EXPECT_NE(missing.error().find("not found"), std::string::npos) << missing.error();
  ScratchDir scratch;
  const std::string broken = CopyPackage(scratch);
  fs::remove(broken + "/aud_ave.npy");
  auto corrupt = Load(*f, "bob", broken);
  EXPECT_FALSE(corrupt.success());
  EXPECT_NE(corrupt.error().find("missing aud_ave.npy"), std::string::npos) << corrupt.error();
  EXPECT_FALSE(fs::exists(f->root / "bob"));
  auto unknown = Load(*f, "carol", "");
  EXPECT_FALSE(unknown.success());
  EXPECT_NE(unknown.error().find("unknown model 'carol'"), std::string::npos);
  auto bad_name = Load(*f, "../x", broken);
  EXPECT_FALSE(bad_name.success());
  EXPECT_NE(bad_name.error().find("not an avatar folder name"), std::string::npos);
  // An audio_override given to LoadModel holds for the model's later requests.
  lipsyncsrv::LoadModelRequest with_override;
  with_override.set_model_name("anna");
  with_override.set_audio_override("other.npy");
  lipsyncsrv::LoadModelResponse overridden;
  ASSERT_TRUE(f->stub->LoadModel(Context().get(), with_override, &overridden).ok());
  ASSERT_TRUE(overridden.success()) << overridden.error();
  const auto expected = ExpectedFaces(f->root / "anna", f->root / "anna/other.npy", {2});
  EXPECT_LE(MaxDiff(Decode(Infer(*f, "anna", 2).prediction_data()), expected[0]), kFaceTolerance);
  with_override.set_audio_override("../outside.npy");
  lipsyncsrv::LoadModelResponse refused;
  ASSERT_TRUE(f->stub->LoadModel(Context().get(), with_override, &refused).ok());
  EXPECT_FALSE(refused.success());
  EXPECT_NE(refused.error().find("outside the avatar folder"), std::string::npos);

  // This server has no audio encoder for imports.
  auto no_encoder = Load(*f, "dave", kPackage);
  EXPECT_FALSE(no_encoder.success());
  EXPECT_NE(no_encoder.error().find("audio encoder"), std::string::npos) << no_encoder.error();
}

// LoadModel of a package exports its checkpoint through the server's exporter (here one copying
// the tiny test model); a server without one refuses such a package by name and goes on serving.
TEST(LipSyncSrv, LoadModelExportsThroughTheServersExporter) {
  const std::string encoder = testing::TestModelPath("tiny_audio_encoder.onnx");
  auto bare =
      Start([&](ServerOptions& options) { options.lipsyncsrv_options.audio_encoder = encoder; });
  ASSERT_TRUE(bare);
  auto refused = Load(*bare, "bob", kPackage);
  EXPECT_FALSE(refused.success());
  EXPECT_NE(refused.error().find("models/7.pth"), std::string::npos) << refused.error();
  EXPECT_NE(refused.error().find("no checkpoint exporter"), std::string::npos) << refused.error();
  EXPECT_FALSE(fs::exists(bare->root / "bob"));
  EXPECT_EQ(bare->server->server->metrics().requests("LoadModel", "FAILED_PRECONDITION"), 1u);
  EXPECT_TRUE(Load(*bare, "anna", "").success());
  EXPECT_TRUE(Infer(*bare, "anna", 1).success());

  std::atomic<int> exports{0};
  auto f = Start([&](ServerOptions& options) {
    options.lipsyncsrv_options.audio_encoder = encoder;
    options.lipsyncsrv_options.export_checkpoint = [&](const std::string& checkpoint,
                                                       const std::string& out_onnx,
                                                       const CheckpointExportOptions&) {
      ++exports;
      EXPECT_EQ(fs::path(checkpoint).filename(), "7.pth");
      std::error_code ec;
      fs::copy_file(testing::TestModelPath("tiny.onnx"), out_onnx, ec);
      return ec ? Internal(ec.message()) : Status::Ok();
    };
  });
  ASSERT_TRUE(f);
  auto imported = Load(*f, "bob", kPackage);
  ASSERT_TRUE(imported.success()) << imported.error();
  EXPECT_EQ(exports.load(), 1);
  EXPECT_TRUE(Infer(*f, "bob", 1).success());
}

// A package import in progress (held here on an event) runs on the repository's loader thread:
// with a single inference worker, a loaded avatar is still answered meanwhile, and the import then
// finishes as a successful LoadModel.
TEST(LipSyncSrv, ImportHoldsNoInferenceWorker) {
  std::mutex mu;
  std::condition_variable cv;
  bool importing = false, load_done = false;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto f = Start([&](ServerOptions& options) {
    options.lipsyncsrv_options.worker_threads = 1;
    options.lipsyncsrv_options.import_package = [&, released](const std::string& package,
                                                              const AvatarImportOptions& import) {
      {
        std::lock_guard lock(mu);
        importing = true;
      }
      cv.notify_all();
      released.wait();
      AvatarImportOptions tiny = TinyModels(import.out_dir);  // no checkpoint export
      tiny.name = import.name;
      return ImportLipSyncSrvPackage(package, tiny);
    };
  });
  ASSERT_TRUE(f);
  ASSERT_TRUE(Infer(*f, "anna", 0).success());
  lipsyncsrv::LoadModelResponse imported;
  std::thread load([&] {
    imported = Load(*f, "bob", kPackage);
    std::lock_guard lock(mu);
    load_done = true;
    cv.notify_all();
  });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return importing || load_done; });
    EXPECT_TRUE(importing) << "LoadModel finished without importing: " << imported.error();
  }
  lipsyncsrv::InferenceRequest request;
  request.set_model_name("anna");
  request.set_frame_id(1);
  lipsyncsrv::InferenceResponse answered;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  const grpc::Status status = f->stub->GenerateInference(&ctx, request, &answered);
  release.set_value();
  load.join();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(answered.success()) << answered.error();
  ASSERT_TRUE(imported.success()) << imported.error();
  EXPECT_NE(imported.message().find("imported package"), std::string::npos) << imported.message();
  EXPECT_TRUE(Infer(*f, "bob", 1).success());
}

}  // namespace
}  // namespace lipsync::server
