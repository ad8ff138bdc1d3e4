#include "server/avatar_registry.h"

#include <algorithm>
#include <filesystem>

namespace lipsync::server {
namespace {

using Clock = std::chrono::steady_clock;

int64_t FileBytes(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

// Model ids name folders directly under the root: nothing that could step outside it.
Status CheckModelId(const std::string& id) {
  if (id.empty()) return InvalidArgument("model_id is empty");
  if (id == "." || id == ".." || id.find('/') != std::string::npos ||
      id.find('\\') != std::string::npos || id.find('\0') != std::string::npos) {
    return InvalidArgument("model_id '" + id + "' is not an avatar folder name");
  }
  return Status::Ok();
}

}  // namespace

std::shared_ptr<LoadedAvatar> AvatarRegistry::Find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = loaded_.find(id);
  return it == loaded_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<LoadedAvatar>> AvatarRegistry::Load(const std::string& id,
                                                           bool* loaded_now) {
  if (loaded_now) *loaded_now = false;
  LIPSYNC_RETURN_IF_ERROR(CheckModelId(id));
  if (auto found = Find(id)) return found;
  std::lock_guard load_lock(load_mu_);
  if (auto found = Find(id)) return found;  // loaded while this call waited
  {
    std::lock_guard lock(mu_);
    if (static_cast<int>(loaded_.size()) >= options_.max_models) {
      return ResourceExhausted("cannot load '" + id + "': " + std::to_string(loaded_.size()) +
                               " avatars are loaded, the most this server holds; unload one");
    }
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto avatar, LoadFromDisk(id));
  std::lock_guard lock(mu_);
  loaded_[id] = avatar;
  if (loaded_now) *loaded_now = true;
  return avatar;
}

Result<std::shared_ptr<LoadedAvatar>> AvatarRegistry::LoadFromDisk(const std::string& id) const {
  const auto start = Clock::now();
  const std::string dir = options_.root + "/" + id;
  std::error_code ec;
  if (options_.root.empty() || !std::filesystem::is_directory(dir, ec)) {
    return NotFound("unknown model '" + id + "': no avatar folder '" + dir + "'");
  }
  auto loaded = std::make_shared<LoadedAvatar>();
  loaded->id = id;
  auto avatar = LoadAvatar(dir);
  if (!avatar.ok()) return avatar.status().WithContext("loading avatar '" + id + "'");
  loaded->avatar = std::move(*avatar);
  const Avatar& a = loaded->avatar;
  auto unet = Engine::Create(a.model_path(), options_.engine);
  if (!unet.ok()) return unet.status().WithContext("loading the UNet of '" + id + "'");
  loaded->unet = std::move(*unet);
  LIPSYNC_ASSIGN_OR_RETURN(loaded->roles, FindUnetInputs(loaded->unet->info()));
  if (loaded->roles.size != a.manifest().model_size) {
    return InvalidArgument("avatar '" + id + "': the UNet takes " +
                           std::to_string(loaded->roles.size) + " pixel faces, avatar.json says " +
                           std::to_string(a.manifest().model_size));
  }
  LIPSYNC_ASSIGN_OR_RETURN(loaded->layout, FaceLayout::ForInputSize(loaded->roles.size));
  auto encoder = AudioEncoder::Create(a.audio_encoder_path(), options_.engine);
  if (!encoder.ok())
    return encoder.status().WithContext("loading the audio encoder of '" + id + "'");
  loaded->encoder = std::move(*encoder);

  LIPSYNC_ASSIGN_OR_RETURN(auto reader, a.OpenFrames());
  loaded->backgrounds.reserve(static_cast<size_t>(a.frame_count()));
  int64_t bytes = FileBytes(a.model_path()) + FileBytes(a.audio_encoder_path());
  for (int64_t i = 0; i < a.frame_count(); ++i) {
    auto frame = reader->Read(i);
    if (!frame.ok()) return frame.status().WithContext("loading avatar '" + id + "'");
    bytes += static_cast<int64_t>(frame->bgr.size());
    loaded->backgrounds.push_back(std::move(*frame));
  }
  loaded->memory_bytes = bytes;
  loaded->load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  return loaded;
}

Status AvatarRegistry::Unload(const std::string& id) {
  std::lock_guard lock(mu_);
  if (loaded_.erase(id) == 0) return NotFound("model '" + id + "' is not loaded");
  return Status::Ok();
}

std::vector<std::shared_ptr<LoadedAvatar>> AvatarRegistry::Loaded() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<LoadedAvatar>> out;
  for (const auto& [id, avatar] : loaded_) out.push_back(avatar);
  return out;
}

std::vector<std::string> AvatarRegistry::Available() const {
  std::vector<std::string> ids;
  std::error_code ec;
  if (options_.root.empty()) return ids;
  for (const auto& entry : std::filesystem::directory_iterator(options_.root, ec)) {
    if (std::filesystem::exists(entry.path() / kAvatarManifestName, ec)) {
      ids.push_back(entry.path().filename().string());
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

int AvatarRegistry::gpu_id() const {
  return options_.engine.provider == "cpu" && options_.engine.backend != "cuda"
             ? -1
             : options_.engine.device_id;
}

}  // namespace lipsync::server
