// Shared by the lipsyncsrv tests: the synthetic model package (make_lipsyncsrv_package.py) and
// imports of it with the tiny test models.
#pragma once

#include <filesystem>
#include <string>

#include "avatar_test_util.h"
#include "lipsync/avatar.h"

namespace lipsync::server::testing {

using lipsync::testing::ScratchDir;
using lipsync::testing::TestModelPath;

inline const std::string kPackage = LIPSYNC_LIPSYNCSRV_PACKAGE;
constexpr int kFrames = 6;  // make_lipsyncsrv_package.py's default
constexpr int kFace = 320;

// make_lipsyncsrv_package.py's rect_of(i).
inline CropRect RectOf(int i) { return {40 + 3 * i, 20 + i, 104 + 3 * i, 84 + i}; }

inline AvatarImportOptions TinyModels(const std::string& out_dir) {
  AvatarImportOptions options;
  options.out_dir = out_dir;
  options.model = TestModelPath("tiny.onnx");  // instead of exporting the package's checkpoint
  options.audio_encoder = TestModelPath("tiny_audio_encoder.onnx");
  return options;
}

// A copy of the package that a test may break.
inline std::string CopyPackage(const ScratchDir& scratch) {
  const std::string copy = scratch / "package";
  std::filesystem::copy(kPackage, copy, std::filesystem::copy_options::recursive);
  return copy;
}

}  // namespace lipsync::server::testing
