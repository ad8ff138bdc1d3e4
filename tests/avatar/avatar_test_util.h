// Helpers for the avatar, frame, video and render tests: scratch folders, small files, images.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "lipsync/avatar.h"
#include "lipsync/face.h"
#include "lipsync/frames.h"

namespace lipsync::testing {

// Where make_fixtures.py wrote its files (the build's testdata/avatar) and the engine test models.
inline std::string FixturePath(const std::string& name) {
  return std::string(LIPSYNC_AVATAR_FIXTURES) + "/" + name;
}
inline std::string TestModelPath(const std::string& name) {
  return std::string(LIPSYNC_TEST_DATA_DIR) + "/" + name;
}

// A fresh folder under the system temp folder, removed with everything in it at destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "lipsync_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data()) ? pattern : std::string();
    EXPECT_FALSE(path_.empty()) << "cannot create a scratch folder";
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Names of everything directly inside, hidden files included, sorted.
  std::vector<std::string> List(const std::string& sub = "") const {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(path_ + "/" + sub, ec)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline void WriteFile(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A deterministic textured BGR image; `seed` shifts the pattern so frames differ.
inline Image PatternImage(int w, int h, int seed = 0) {
  Image img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.bgr[(static_cast<size_t>(y) * w + x) * 3 + c] =
            static_cast<uint8_t>((x * (c + 1) + y * 2 + seed * 37 + c * 60) % 256);
  return img;
}

// Share of bytes that differ by more than `tolerance`, and the largest difference.
struct ByteDiff {
  double share_over = 0.0;
  int max = 0;
};
inline ByteDiff CompareBytes(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b,
                             int tolerance) {
  ByteDiff d;
  if (a.size() != b.size() || a.empty()) return {1.0, 255};
  size_t over = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const int diff = std::abs(int(a[i]) - int(b[i]));
    d.max = std::max(d.max, diff);
    over += diff > tolerance;
  }
  d.share_over = static_cast<double>(over) / a.size();
  return d;
}

// The fixture dataset imported with the tiny models into dir/avatar.
inline Avatar ImportTinyAvatar(const ScratchDir& dir) {
  AvatarImportOptions o;
  o.out_dir = dir / "avatar";
  o.model = TestModelPath("tiny.onnx");
  o.audio_encoder = TestModelPath("tiny_audio_encoder.onnx");
  auto avatar = ImportSyncTalkDataset(FixturePath("dataset"), o);
  // Thrown, not dereferenced: the test that asked fails with the reason.
  if (!avatar.ok())
    throw std::runtime_error("cannot import the tiny avatar: " + avatar.status().ToString());
  return *avatar;
}

}  // namespace lipsync::testing
