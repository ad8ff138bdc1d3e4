// Shared by the lipsyncsrv tests: the synthetic model package (make_lipsyncsrv_package.py) and
// imports of it with the tiny test models.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "avatar_test_util.h"
#include "lipsync/avatar.h"
#include "monolithic/monolithic.pb.h"
#include "server_test_util.h"

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

// The package imported as avatar "anna" under `root` (the tiny test models), and options for a
// server that serves it on every protocol: lipsync.v1 and KServe (the tiny UNet, batches of up to
// `max_batch`), the monolithic and lipsyncsrv services and live sessions.
inline Result<ServerOptions> AnnaOnEveryProtocol(const ScratchDir& root, int max_batch) {
  auto imported = ImportLipSyncSrvPackage(kPackage, TinyModels(root / "anna"));
  if (!imported.ok()) return imported.status();
  ServerOptions options = Options(max_batch, 0);
  options.monolithic = true;
  options.lipsyncsrv = true;
  options.monolithic_options.avatars.root = root.path();
  options.monolithic_options.avatars.engine.intra_op_threads = 1;
  options.monolithic_options.avatars.engine.max_batch = 64;
  return options;
}

// A copy of the package that a test may break.
inline std::string CopyPackage(const ScratchDir& scratch) {
  const std::string copy = scratch / "package";
  std::filesystem::copy(kPackage, copy, std::filesystem::copy_options::recursive);
  return copy;
}

// An InferBatchComposite for the package's avatar "anna": `batch` random visual frames (`seed`)
// and the raw audio they need (a sine), as the Go clients send them.
inline monolithic::CompositeBatchRequest MonolithicRequest(int batch, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::vector<float> visual(static_cast<size_t>(batch) * 6 * kFace * kFace);
  for (auto& v : visual) v = u(rng);
  std::vector<float> pcm(static_cast<size_t>(batch + 15) * 640);
  for (size_t i = 0; i < pcm.size(); ++i) pcm[i] = 0.3f * std::sin(0.05f * static_cast<float>(i));
  monolithic::CompositeBatchRequest r;
  r.set_model_id("anna");
  r.set_visual_frames(visual.data(), visual.size() * sizeof(float));
  r.set_raw_audio(pcm.data(), pcm.size() * sizeof(float));
  r.set_batch_size(batch);
  r.set_start_frame_idx(0);
  r.set_sample_rate(16000);
  return r;
}

}  // namespace lipsync::server::testing
