// Small avatar folders for the server tests: pattern frames, the tiny UNet and the tiny encoder.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "avatar_test_util.h"
#include "lipsync/avatar.h"
#include "server/core/avatar_registry.h"

namespace lipsync::server::testing {

inline CropRect TestAvatarRect(int i) { return {48 + 4 * i, 24, 112 + 4 * i, 88}; }

// An avatar folder `root/id` with `frames` pattern frames of w x h and TestAvatarRect(i) faces.
inline void WriteTestAvatar(const std::string& root, const std::string& id, int frames = 5,
                            int w = 192, int h = 128) {
  using lipsync::testing::WriteFile;
  const std::string dir = root + "/" + id;
  WriteFile(dir + "/avatar.json", R"({"format": "lipsync-avatar", "version": 1, "name": ")" + id +
                                      R"(", "fps": 25, "model_size": 320, "model": "unet.onnx",
    "audio_encoder": "enc.onnx", "frames": "frames", "crop_rects": "crop_rects.json"})");
  std::filesystem::copy_file(lipsync::testing::TestModelPath("tiny.onnx"), dir + "/unet.onnx");
  std::filesystem::copy_file(lipsync::testing::TestModelPath("tiny_audio_encoder.onnx"),
                             dir + "/enc.onnx");
  std::filesystem::create_directories(dir + "/frames");
  std::string rects = "[";
  for (int i = 0; i < frames; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "/frames/%06d.png", i);
    ASSERT_TRUE(SaveImage(dir + name, lipsync::testing::PatternImage(w, h, i)).ok());
    rects += std::string(i ? "," : "") + CropRectToString(TestAvatarRect(i));
  }
  WriteFile(dir + "/crop_rects.json", rects + "]");
}

// The state of avatar `id` among `states`: a test failure (and an empty state) when it is not
// there, so that checks on it cannot pass by not running.
inline AvatarState StateOf(const std::vector<AvatarState>& states, const std::string& id) {
  for (const AvatarState& s : states) {
    if (s.id == id) return s;
  }
  ADD_FAILURE() << "no state for avatar '" << id << "'";
  return AvatarState{};
}

// Registry options for the avatar folders under `root` (or a YAML config), one engine thread each.
inline AvatarRegistryOptions TestRegistryOptions(const std::string& root) {
  AvatarRegistryOptions o;
  o.root = root;
  o.engine.intra_op_threads = 1;
  return o;
}

}  // namespace lipsync::server::testing
