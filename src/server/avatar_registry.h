// Avatars loaded on demand from a root folder (one avatar folder per model id, docs/AVATARS.md):
// the UNet and audio encoder engines, the decoded background frames and their face rectangles.
//
// Loaded avatars are shared: a request holds a shared_ptr for as long as it runs, so unloading
// one only drops the registry's reference and the memory goes when the last request finishes.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lipsync/audio.h"
#include "lipsync/avatar.h"
#include "lipsync/engine.h"

namespace lipsync::server {

struct LoadedAvatar {
  std::string id;
  Avatar avatar;
  std::unique_ptr<Engine> unet;
  std::unique_ptr<AudioEncoder> encoder;
  UnetInputs roles;
  FaceLayout layout;
  std::vector<Image> backgrounds;  // frame i, decoded once at load
  int64_t memory_bytes = 0;        // backgrounds plus both model files
  double load_ms = 0;

  // Statistics, updated by requests without a lock.
  std::atomic<int64_t> requests{0};
  std::atomic<int64_t> inference_us{0};  // UNet time summed over requests
  std::atomic<int64_t> last_used_unix_s{0};
};

struct AvatarRegistryOptions {
  std::string root;      // folder of avatar folders; model id = folder name
  EngineOptions engine;  // for both models of every avatar
  int max_models = 8;    // loads beyond this are refused (unload one first)
};

class AvatarRegistry {
 public:
  explicit AvatarRegistry(AvatarRegistryOptions options) : options_(std::move(options)) {}

  // The loaded avatar, or nullptr when `id` is not loaded.
  std::shared_ptr<LoadedAvatar> Find(const std::string& id) const;
  // Loads `id` unless it is loaded; `loaded_now` tells which. NotFound for an id with no folder,
  // InvalidArgument for an id that is not a plain folder name, ResourceExhausted when full, and
  // the avatar's own load errors.
  Result<std::shared_ptr<LoadedAvatar>> Load(const std::string& id, bool* loaded_now = nullptr);
  // NotFound when `id` is not loaded.
  Status Unload(const std::string& id);

  std::vector<std::shared_ptr<LoadedAvatar>> Loaded() const;
  // Model ids of the avatar folders under the root (avatar.json present), sorted.
  std::vector<std::string> Available() const;
  int max_models() const { return options_.max_models; }
  // 0 on a GPU provider, -1 on the CPU (the Go server's convention for "no GPU").
  int gpu_id() const;

 private:
  Result<std::shared_ptr<LoadedAvatar>> LoadFromDisk(const std::string& id) const;

  AvatarRegistryOptions options_;
  mutable std::mutex mu_;  // guards loaded_
  std::mutex load_mu_;     // one load at a time, so an avatar is never loaded twice
  std::map<std::string, std::shared_ptr<LoadedAvatar>> loaded_;
};

}  // namespace lipsync::server
