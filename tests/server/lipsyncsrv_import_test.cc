// Importing the Python lipsync server's model packages (ImportLipSyncSrvPackage) on the synthetic
// package: the avatar it makes, every missing file named, broken packages refused without
// leftovers.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "lipsync/npy.h"
#include "lipsyncsrv_test_util.h"

namespace lipsync::server {
namespace {

namespace fs = std::filesystem;
using lipsync::testing::ScratchDir;
using lipsync::testing::WriteFile;
using testing::CopyPackage;
using testing::kFrames;
using testing::kPackage;
using testing::RectOf;
using testing::TinyModels;

TEST(LipSyncSrvImport, PackageBecomesAvatar) {
  ScratchDir scratch;
  auto avatar = ImportLipSyncSrvPackage(kPackage, TinyModels(scratch / "anna"));
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  EXPECT_EQ(avatar->frame_count(), kFrames);
  EXPECT_TRUE(avatar->frames_are_video());
  EXPECT_EQ(avatar->width(), 160);
  EXPECT_EQ(avatar->height(), 128);
  for (int i = 0; i < kFrames; ++i) EXPECT_EQ(avatar->crop_rects()[i], RectOf(i)) << i;
  ASSERT_FALSE(avatar->audio_features_path().empty());
  auto stored = LoadNpy(avatar->audio_features_path());
  auto original = LoadNpy(kPackage + "/aud_ave.npy");
  ASSERT_TRUE(stored.ok() && original.ok());
  ASSERT_EQ(stored->byte_size(), original->byte_size());
  EXPECT_EQ(std::memcmp(stored->data(), original->data(), stored->byte_size()), 0);
  // The manifest names the features, and they survive a reload.
  auto reloaded = LoadAvatar(scratch / "anna");
  ASSERT_TRUE(reloaded.ok()) << reloaded.status().ToString();
  EXPECT_EQ(reloaded->manifest().audio_features, "audio_features.npy");
}

TEST(LipSyncSrvImport, EveryMissingFileIsNamed) {
  ScratchDir scratch;
  const std::string package = CopyPackage(scratch);
  for (const char* name : {"aud_ave.npy", "video.mp4", "package_info.json"}) {
    fs::remove(package + "/" + name);
  }
  fs::remove_all(package + "/face_bounds");
  fs::remove_all(package + "/models");
  AvatarImportOptions options = TinyModels(scratch / "out");
  options.model.clear();  // the checkpoint is needed now
  auto avatar = ImportLipSyncSrvPackage(package, options);
  ASSERT_FALSE(avatar.ok());
  EXPECT_EQ(avatar.status().code(), StatusCode::kNotFound);
  for (const char* name :
       {"aud_ave.npy", "video.mp4", "package_info.json", "face_bounds/", "models/*.pth"}) {
    EXPECT_NE(avatar.status().message().find(name), std::string::npos)
        << name << " not named in: " << avatar.status().message();
  }
  for (const char* kept : {"face_regions_320.mp4", "masked_regions_320.mp4"}) {
    EXPECT_EQ(avatar.status().message().find(kept), std::string::npos) << kept;
  }
  EXPECT_FALSE(fs::exists(scratch / "out"));
}

TEST(LipSyncSrvImport, BrokenPackagesAreRefusedAndLeaveNothing) {
  struct Case {
    const char* what;
    std::function<void(const std::string&)> breakit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"features of the wrong width",
       [](const std::string& p) {
         Tensor t(DataType::kFloat32, {4, 100});
         ASSERT_TRUE(SaveNpy(p + "/aud_ave.npy", t.view()).ok());
       },
       "expected float32 [frames, 512]"},
      {"truncated features", [](const std::string& p) { fs::resize_file(p + "/aud_ave.npy", 90); },
       "aud_ave.npy"},
      {"bounds missing for a frame",
       [](const std::string& p) { fs::remove(p + "/face_bounds/2.npy"); }, "face bounds 2"},
      {"one bounds file too few",
       [](const std::string& p) { fs::remove(p + "/face_bounds/5.npy"); }, "face_bounds/ has 5"},
      {"bounds with three numbers",
       [](const std::string& p) {
         Tensor t(DataType::kInt64, {3});
         ASSERT_TRUE(SaveNpy(p + "/face_bounds/1.npy", t.view()).ok());
       },
       "face_bounds/1.npy"},
      {"bounds outside the frame",
       [](const std::string& p) {
         Tensor t(DataType::kInt64, {4});
         const int64_t v[] = {100, 100, 400, 400};
         std::memcpy(t.data(), v, sizeof(v));
         ASSERT_TRUE(SaveNpy(p + "/face_bounds/3.npy", t.view()).ok());
       },
       "crop rectangle 3"},
      {"bounds past int's range (undefined when converted)",
       [](const std::string& p) {
         Tensor t(DataType::kFloat32, {4});
         const float v[] = {100, 100, 3e9f, 400};
         std::memcpy(t.data(), v, sizeof(v));
         ASSERT_TRUE(SaveNpy(p + "/face_bounds/4.npy", t.view()).ok());
       },
       "face_bounds/4.npy' hold 3000000000.000000, not a pixel coordinate"},
      {"crop video not a video",
       [](const std::string& p) { WriteFile(p + "/face_regions_320.mp4", "x"); },
       "face_regions_320.mp4"},
      {"package_info not JSON",
       [](const std::string& p) { WriteFile(p + "/package_info.json", "{"); },
       "package_info.json is not a JSON object"},
  };
  for (const auto& c : cases) {
    ScratchDir scratch;
    const std::string package = CopyPackage(scratch);
    c.breakit(package);
    auto avatar = ImportLipSyncSrvPackage(package, TinyModels(scratch / "out"));
    ASSERT_FALSE(avatar.ok()) << c.what;
    EXPECT_NE(avatar.status().message().find(c.message), std::string::npos)
        << c.what << ": " << avatar.status().message();
    EXPECT_FALSE(fs::exists(scratch / "out")) << c.what;
  }
}

TEST(LipSyncSrvImport, CorruptZipsAndMissingPackagesAreRefused) {
  ScratchDir scratch;
  WriteFile(scratch / "package.zip", std::string("PK\x03\x04", 4) + "rest");
  auto zip = ImportLipSyncSrvPackage(scratch / "package.zip", TinyModels(scratch / "out"));
  ASSERT_FALSE(zip.ok());
  EXPECT_EQ(zip.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(zip.status().message().find("is not a readable zip archive"), std::string::npos)
      << zip.status().message();
  EXPECT_FALSE(fs::exists(scratch / "out"));
  auto missing = ImportLipSyncSrvPackage(scratch / "nothing", TinyModels(scratch / "out"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Without a model the package's checkpoint goes through the exporter the caller gives (here one
// that copies the tiny test model, so no Python runs): its file becomes the avatar's UNet.
TEST(LipSyncSrvImport, CheckpointGoesThroughTheGivenExporter) {
  ScratchDir scratch;
  AvatarImportOptions options = TinyModels(scratch / "anna");
  const std::string tiny = options.model;
  options.model.clear();
  std::vector<std::string> checkpoints;
  int size = 0;
  options.export_checkpoint = [&](const std::string& checkpoint, const std::string& out_onnx,
                                  const CheckpointExportOptions& how) {
    checkpoints.push_back(checkpoint);
    size = how.size;
    std::error_code ec;
    fs::copy_file(tiny, out_onnx, ec);
    return ec ? Internal("cannot copy the model: " + ec.message()) : Status::Ok();
  };
  CheckpointExportOptions how;
  how.size = 328;
  auto avatar = ImportLipSyncSrvPackage(kPackage, options, how);
  ASSERT_TRUE(avatar.ok()) << avatar.status().ToString();
  ASSERT_EQ(checkpoints.size(), 1u);
  EXPECT_EQ(fs::path(checkpoints[0]).filename(), "7.pth");
  EXPECT_EQ(size, 328);
  EXPECT_EQ(ReadAll(avatar->model_path()), ReadAll(tiny));
  EXPECT_TRUE(LoadAvatar(scratch / "anna").ok());
}

// An exporter's failure, or a success that wrote nothing, fails the import and leaves no avatar.
TEST(LipSyncSrvImport, ExporterFailuresFailTheImport) {
  ScratchDir scratch;
  AvatarImportOptions options = TinyModels(scratch / "anna");
  options.model.clear();
  options.export_checkpoint = [](const std::string&, const std::string&,
                                 const CheckpointExportOptions&) {
    return InvalidArgument("the checkpoint holds no UNet");
  };
  auto failed = ImportLipSyncSrvPackage(kPackage, options);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(failed.status().message().find("the checkpoint holds no UNet"), std::string::npos)
      << failed.status().message();
  EXPECT_FALSE(fs::exists(scratch / "anna"));

  options.export_checkpoint = [](const std::string&, const std::string&,
                                 const CheckpointExportOptions&) { return Status::Ok(); };
  auto empty = ImportLipSyncSrvPackage(kPackage, options);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("wrote no ONNX file"), std::string::npos)
      << empty.status().message();
  EXPECT_FALSE(fs::exists(scratch / "anna"));
}

// With no exporter a checkpoint is refused by name, nothing is left behind, and the next import
// (with a model) succeeds.
TEST(LipSyncSrvImport, WithoutAnExporterACheckpointIsRefused) {
  ScratchDir scratch;
  AvatarImportOptions options = TinyModels(scratch / "anna");
  options.model.clear();
  auto refused = ImportLipSyncSrvPackage(kPackage, options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  const std::string& message = refused.status().message();
  EXPECT_NE(message.find("models/7.pth"), std::string::npos) << message;
  EXPECT_NE(message.find("no checkpoint exporter"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(scratch / "anna"));
  auto next = ImportLipSyncSrvPackage(kPackage, TinyModels(scratch / "anna"));
  EXPECT_TRUE(next.ok()) << next.status().ToString();
}

}  // namespace
}  // namespace lipsync::server
