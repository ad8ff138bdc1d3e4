#include "server/core/avatar_registry.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <optional>
#include <set>

#include "lipsync/memory.h"
#include "server/core/avatar_frames.h"

namespace lipsync::server {
namespace {

using Clock = std::chrono::steady_clock;

// The registry whose loader thread this is (null on every other thread): Load called there runs
// at once instead of waiting for itself.
thread_local const void* t_loader_of = nullptr;

int64_t FileBytes(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(size);
}

std::string Mib(int64_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

// For an avatar of image files whose frames are kept decoded: what they would take kept encoded.
std::string EncodedFramesHint(const Avatar& avatar, stream::FrameStorage storage) {
  if (storage != stream::FrameStorage::kDecoded || avatar.frames_are_video()) return "";
  return fmt::format("; its frames take {} decoded and would take {} kept encoded",
                     Mib(ExpectedFrameBytes(avatar, stream::FrameStorage::kDecoded)),
                     Mib(ExpectedFrameBytes(avatar, stream::FrameStorage::kEncoded)));
}

std::string BackendOf(const Engine& engine) {
  return engine.info().backend + "/" + engine.info().provider;
}

// The avatar's encoder and what it counts against the budgets (once, however many share it).
void SetEncoder(LoadedAvatar& loaded, std::shared_ptr<AudioEncoder> encoder,
                const ModelFingerprint& model) {
  loaded.encoder = std::move(encoder);
  loaded.encoder_host_bytes = model.bytes;
  loaded.encoder_gpu_bytes =
      loaded.encoder->engine().capabilities().device_id >= 0 ? model.bytes : 0;
}

// Where both models of a freshly loaded avatar run, and why either is not where it was asked to
// run: a GPU server whose avatars quietly run on the CPU is the first thing an operator looks for.
void LogLoad(const LoadedAvatar& a, bool encoder_shared) {
  spdlog::info(
      "loaded avatar '{}' in {:.0f} ms: {} frames ({}), {}, UNet on {}, audio encoder on {}{}{}",
      a.id, a.load_ms, a.frames.size(), stream::FrameStorageName(a.frames.storage()),
      Mib(a.memory_bytes), BackendOf(*a.unet), BackendOf(a.encoder->engine()),
      encoder_shared ? " (shared with a loaded avatar)"
                     : fmt::format(" ({})", Mib(a.encoder_host_bytes)),
      a.warmed_batch > 0 ? fmt::format(", UNet warmed at batches 1 to {}", a.warmed_batch) : "");
  if (!a.unet->info().fallback_reason.empty()) {
    spdlog::warn("avatar '{}': UNet: {}", a.id, a.unet->info().fallback_reason);
  }
  if (!encoder_shared && !a.encoder->fallback_reason().empty()) {
    spdlog::warn("avatar '{}': audio encoder: {}", a.id, a.encoder->fallback_reason());
  }
}

}  // namespace

DeviceMemoryStats AvatarRegistry::DeviceWorking(int device) {
  for (const DeviceMemoryStats& s : DeviceMemoryPools()) {
    if (s.device == device) return s;
  }
  DeviceMemoryStats none;
  none.device = device;
  return none;
}

void ScheduleAvatar(LoadedAvatar& a, std::shared_ptr<runtime::Scheduler> scheduler) {
  runtime::ModelConfig config;
  config.name = a.id;
  config.max_batch = static_cast<int>(a.unet->info().max_batch);
  config.layout = a.layout;
  config.visual_input = static_cast<int>(a.roles.visual);
  config.audio_input = static_cast<int>(a.roles.audio);
  // A live session's share of each batch's UNet time (its share of the rows): sessions have no
  // requests to time, the request services time theirs (RecordRequest). The batch's callers keep
  // the avatar leased meanwhile.
  config.on_batch = [avatar = &a](const runtime::BatchRecord& r) {
    const int frames = r.by_origin[static_cast<size_t>(runtime::Origin::kSession)];
    if (frames == 0 || r.rows == 0) return;
    const auto us = static_cast<int64_t>(r.seconds * 1e6 * frames / r.rows);
    avatar->inference_us.fetch_add(us);
    avatar->totals->inference_us.fetch_add(us);
  };
  a.scheduled = scheduler->AddModel(a.unet.get(), config);
  a.scheduler = std::move(scheduler);
}

void LoadedAvatar::RecordRequest(double inference_ms) {
  const auto us = static_cast<int64_t>(inference_ms * 1000.0);
  requests.fetch_add(1);
  inference_us.fetch_add(us);
  totals->requests.fetch_add(1);
  totals->inference_us.fetch_add(us);
  last_used_unix_s.store(std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count());
}

// An avatar opened and sized but not yet loaded.
struct AvatarRegistry::Candidate {
  std::shared_ptr<LoadedAvatar> loaded;  // holds the shared encoder already when one was found
  ModelFingerprint encoder_model;
  int64_t host_bytes = 0, gpu_bytes = 0;  // estimates, from the files and the first frame's size
};

AvatarRegistry::AvatarRegistry(AvatarRegistryOptions options) : options_(std::move(options)) {
  auto catalog = AvatarCatalog::Open(options_.root, options_.audio_encoder);
  if (catalog.ok()) {
    catalog_ = std::move(*catalog);
  } else {
    config_status_ = catalog.status();
  }
  const AvatarConfigSettings& s = catalog_.settings();
  max_models_ = !options_.max_models_set && s.max_models ? *s.max_models : options_.max_models;
  max_host_bytes_ =
      !options_.max_host_set && s.max_host_bytes ? *s.max_host_bytes : options_.max_host_bytes;
  max_gpu_bytes_ =
      !options_.max_gpu_set && s.max_gpu_bytes ? *s.max_gpu_bytes : options_.max_gpu_bytes;
  frames_ = !options_.frames_set && s.frames ? *s.frames : options_.frames;
  runtime::SchedulerOptions so;
  so.device = gpu_id() >= 0 ? "cuda:" + std::to_string(gpu_id()) : "cpu";
  scheduler_ = options_.scheduler && options_.scheduler->device() == so.device
                   ? options_.scheduler
                   : std::make_shared<runtime::Scheduler>(so);
  options_.scheduler = nullptr;
  // Working memory counts against the budgets: each pool's limit is what the avatars leave, and a
  // run that does not fit first evicts idle avatars.
  if (max_host_bytes_ > 0 || gpu_budget()) {
    // ONNX Runtime's memory pattern serves every run after the first of a shape from one planned
    // block, a quarter larger than what the first run held at once on the demo UNet: a budget set
    // from the first run would refuse the second. Per-operator allocations from the pool hold the
    // same on every run (a few percent slower, docs/PERFORMANCE.md).
    if (max_host_bytes_ > 0 && options_.engine.provider == "cpu") {
      options_.engine.ort.memory_pattern = false;
    }
    SyncWorkingLimitLocked();
    scheduler_->SetMemoryHook([this] { return MakeWorkingRoom(); });
  }
  encoders_ = std::make_unique<SharedEncoders>(options_.engine);
  if (options_.cache_dir.empty()) options_.cache_dir = s.cache_dir;
  if (options_.cache_dir.empty()) {
    options_.cache_dir = (std::filesystem::temp_directory_path() / "lipsync-avatar-cache").string();
  }
  loader_ = std::make_unique<WorkerPool>(1);
  loader_->Post([this] { t_loader_of = this; });  // its one thread, for as long as it runs
}

Result<std::unique_ptr<AvatarRegistry>> AvatarRegistry::Create(AvatarRegistryOptions options) {
  auto registry = std::make_unique<AvatarRegistry>(std::move(options));
  if (!registry->config_status_.ok()) return registry->config_status_;
  if (registry->max_models_ < 1) return InvalidArgument("the avatar cap must be at least 1");
  return registry;
}

AvatarRegistry::~AvatarRegistry() {
  loader_.reset();  // finishes the loads posted, while the scheduler still runs
  // Stopped here, not by the last avatar to go, which a worker may hold.
  scheduler_->SetMemoryHook(nullptr);
  scheduler_->Shutdown();
  if (max_host_bytes_ > 0) HostMemory().SetLimit(0);
  if (gpu_budget()) SetDeviceMemoryLimit(gpu_id(), 0);
}

AvatarRegistry::Entry& AvatarRegistry::EntryLocked(const std::string& id) const {
  return entries_[id];
}

std::shared_ptr<LoadedAvatar> AvatarRegistry::LeaseLocked(Entry& entry, bool use) const {
  if (use) entry.last_use = ++tick_;
  std::shared_ptr<LoadedAvatar> owner = entry.avatar;
  owner->pins.fetch_add(1);
  // Shares the owner's object; the deleter runs when the last copy of this lease goes.
  return std::shared_ptr<LoadedAvatar>(owner.get(),
                                       [owner](LoadedAvatar* a) { a->pins.fetch_sub(1); });
}

std::shared_ptr<LoadedAvatar> AvatarRegistry::Find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.avatar) return nullptr;
  return LeaseLocked(it->second);
}

AvatarUsage AvatarRegistry::UsageLocked(const LoadedAvatar* incoming) const {
  AvatarUsage u;
  // Encoders by their owner (never dereferenced here), each counted once.
  std::set<std::weak_ptr<AudioEncoder>, std::owner_less<>> encoders;
  const auto count_encoder = [&](const std::weak_ptr<AudioEncoder>& encoder, int64_t host,
                                 int64_t gpu) {
    if (encoder.expired() || !encoders.insert(encoder).second) return;
    ++u.encoders;
    u.host_bytes += host;
    u.gpu_bytes += gpu;
  };
  for (const auto& [id, e] : entries_) {
    if (!e.avatar) continue;
    ++u.loaded;
    u.host_bytes += e.avatar->memory_bytes;
    u.gpu_bytes += e.avatar->gpu_bytes;
    count_encoder(e.avatar->encoder, e.avatar->encoder_host_bytes, e.avatar->encoder_gpu_bytes);
  }
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const Retired& r) { return r.avatar.expired(); }),
                 retired_.end());
  for (const Retired& r : retired_) {
    u.host_bytes += r.host_bytes;
    u.gpu_bytes += r.gpu_bytes;
    count_encoder(r.encoder, r.encoder_host_bytes, r.encoder_gpu_bytes);
  }
  if (incoming) {
    count_encoder(incoming->encoder, incoming->encoder_host_bytes, incoming->encoder_gpu_bytes);
  }
  u.host_bytes += reserved_host_;
  u.gpu_bytes += reserved_gpu_;
  return u;
}

AvatarUsage AvatarRegistry::Usage() const {
  std::lock_guard lock(mu_);
  return UsageLocked();
}

Status AvatarRegistry::MakeRoomLocked(const std::string& id, int64_t host, int64_t gpu,
                                      bool one_more, const LoadedAvatar& incoming,
                                      std::vector<std::shared_ptr<LoadedAvatar>>* dropped) {
  // Each budget holds the avatars and the working memory runs hold now (the pools' caches are
  // given back first).
  int64_t working = 0, gpu_working = 0;
  if (max_host_bytes_ > 0) {
    HostMemory().Trim(0);
    working = HostMemory().stats().working_in_use;
  }
  if (gpu_budget()) {
    TrimDeviceMemory(0, gpu_id());
    gpu_working = DeviceWorking(gpu_id()).working_in_use;
  }
  auto fits = [&](const AvatarUsage& u) {
    return (!one_more || u.loaded < max_models_) &&
           (max_host_bytes_ <= 0 || u.host_bytes + working + host <= max_host_bytes_) &&
           (max_gpu_bytes_ <= 0 || u.gpu_bytes + gpu_working + gpu <= max_gpu_bytes_);
  };
  for (AvatarUsage u = UsageLocked(&incoming); !fits(u); u = UsageLocked(&incoming)) {
    std::vector<std::string> busy;
    Entry* victim = IdleVictimLocked(id, &busy);
    if (!victim) {
      std::string why;
      if (one_more && u.loaded >= max_models_) {
        why = fmt::format("the avatar cap of {} loaded avatars is reached", max_models_);
      } else if (max_host_bytes_ > 0 && u.host_bytes + working + host > max_host_bytes_) {
        why = fmt::format(
            "it needs {} of host memory and the host memory budget of {} has {} free ({} held by "
            "runs){}",
            Mib(host), Mib(max_host_bytes_), Mib(max_host_bytes_ - u.host_bytes - working),
            Mib(working), EncodedFramesHint(incoming.avatar, frames_));
      } else {
        why = fmt::format(
            "it needs {} of GPU memory and the GPU memory budget of {} has {} free ({} held by "
            "runs)",
            Mib(gpu), Mib(max_gpu_bytes_), Mib(max_gpu_bytes_ - u.gpu_bytes - gpu_working),
            Mib(gpu_working));
      }
      std::string held;
      for (const auto& b : busy) held += (held.empty() ? "" : ", ") + b;
      return ResourceExhausted(
          "cannot load '" + id + "': " + why +
          (busy.empty() ? std::string(" and no avatar can be evicted")
                        : "; the loaded avatars are all in use (" + held + ")") +
          (retired_.empty() ? "" : "; unloaded avatars still in use hold memory too"));
    }
    dropped->push_back(std::move(victim->avatar));
    victim->avatar.reset();
    ++victim->evictions;
    victim->reason = "evicted";
  }
  return Status::Ok();
}

// The least recently used loaded avatar that no request holds, other than `except`; the held ones
// go to `busy`.
AvatarRegistry::Entry* AvatarRegistry::IdleVictimLocked(const std::string& except,
                                                        std::vector<std::string>* busy) const {
  Entry* victim = nullptr;
  for (auto& [other, e] : entries_) {
    if (!e.avatar || other == except) continue;
    if (e.avatar->pins.load() > 0) {
      busy->push_back(other);
    } else if (!victim || e.last_use < victim->last_use) {
      victim = &e;
    }
  }
  return victim;
}

void AvatarRegistry::SyncWorkingLimitLocked() const {
  if (max_host_bytes_ <= 0 && !gpu_budget()) return;
  const AvatarUsage u = UsageLocked();
  if (max_host_bytes_ > 0)
    HostMemory().SetLimit(std::max<int64_t>(1, max_host_bytes_ - u.host_bytes));
  if (gpu_budget())
    SetDeviceMemoryLimit(gpu_id(), std::max<int64_t>(1, max_gpu_bytes_ - u.gpu_bytes));
}

bool AvatarRegistry::MakeWorkingRoom() {
  std::shared_ptr<LoadedAvatar> dropped;  // freed after the lock
  std::lock_guard lock(mu_);
  if (max_host_bytes_ <= 0 && !gpu_budget()) return false;
  std::vector<std::string> busy;
  Entry* victim = IdleVictimLocked("", &busy);
  if (!victim) return false;
  spdlog::info("evicting avatar '{}' to make room for a run's working memory", victim->avatar->id);
  dropped = std::move(victim->avatar);
  ++victim->evictions;
  victim->reason = "evicted";
  SyncWorkingLimitLocked();  // it is freed just after the lock
  return true;
}

Result<AvatarRegistry::Candidate> AvatarRegistry::Prepare(const std::string& id) const {
  LIPSYNC_ASSIGN_OR_RETURN(AvatarSource source, catalog_.Find(id));
  if (!source.problem.empty()) return InvalidArgument(source.problem);
  std::string dir = source.path;
  if (source.kind == AvatarSource::Kind::kGoModel) {
    auto imported = ImportGoModelToCache(source, options_.cache_dir);
    if (!imported.ok()) return imported.status().WithContext("loading avatar '" + id + "'");
    dir = *imported;
  } else if (std::error_code ec; !std::filesystem::is_directory(dir, ec)) {
    return NotFound("unknown model '" + id + "': no avatar folder '" + dir + "'");
  }
  Candidate c;
  c.loaded = std::make_shared<LoadedAvatar>();
  c.loaded->id = id;
  auto avatar = LoadAvatar(dir);
  if (!avatar.ok()) return avatar.status().WithContext("loading avatar '" + id + "'");
  c.loaded->avatar = std::move(*avatar);
  const Avatar& a = c.loaded->avatar;
  auto encoder_model = FingerprintModel(a.audio_encoder_path());
  if (!encoder_model.ok()) {
    return encoder_model.status().WithContext("loading the audio encoder of '" + id + "'");
  }
  c.encoder_model = std::move(*encoder_model);
  // An encoder of the same bytes already held is shared: it costs this avatar nothing more.
  if (std::shared_ptr<AudioEncoder> shared = encoders_->Find(c.encoder_model)) {
    SetEncoder(*c.loaded, std::move(shared), c.encoder_model);
  }
  const int64_t models =
      FileBytes(a.model_path()) + (c.loaded->encoder ? 0 : c.encoder_model.bytes);
  c.host_bytes = models + ExpectedFrameBytes(a, frames_);
  c.gpu_bytes = gpu_id() >= 0 ? models : 0;
  return c;
}

namespace {

// Runs the UNet once at each batch size loaded.warmed_batch..1 as live sessions do (the frame
// form's uint8 faces, zeros), one batch at a time. Largest first: the CUDA backend's working
// memory then grows once, and the graphs captured for the smaller batches over it stay valid.
Status WarmUp(LoadedAvatar& loaded) {
  const int s = loaded.layout.inner_size;
  const Shape& declared = loaded.unet->info().inputs[loaded.roles.audio].shape;
  int64_t window = 1;
  for (size_t d = 1; d < declared.size(); ++d) window *= declared[d];
  const int n = loaded.warmed_batch;
  std::vector<uint8_t> faces(static_cast<size_t>(n) * s * s * 3), out(faces.size());
  std::vector<float> audio(static_cast<size_t>(n * window));
  for (int b = n; b >= 1; --b) {
    Shape audio_shape = declared;
    audio_shape[0] = b;
    runtime::Job job;
    job.visual = {DataType::kUInt8, {b, s, s, 3}, faces.data()};
    job.audio = {DataType::kFloat32, audio_shape, audio.data()};
    job.output = {DataType::kUInt8, {b, s, s, 3}, out.data()};
    job.priority = runtime::Priority::kLive;
    job.origin = runtime::Origin::kWarmup;
    Status ran = loaded.scheduler->Run(loaded.scheduled, std::move(job));
    if (!ran.ok()) {
      return ran.WithContext("warming up the UNet of '" + loaded.id + "' at batch " +
                             std::to_string(b));
    }
  }
  return Status::Ok();
}

}  // namespace

Status AvatarRegistry::LoadModels(Candidate& c) const {
  const auto start = Clock::now();
  LoadedAvatar& loaded = *c.loaded;
  const std::string& id = loaded.id;
  const Avatar& a = loaded.avatar;
  auto unet = Engine::Create(a.model_path(), options_.engine);
  if (!unet.ok()) return unet.status().WithContext("loading the UNet of '" + id + "'");
  loaded.unet = std::move(*unet);
  LIPSYNC_ASSIGN_OR_RETURN(loaded.roles, FindUnetInputs(loaded.unet->info()));
  if (loaded.roles.size != a.manifest().model_size) {
    return InvalidArgument("avatar '" + id + "': the UNet takes " +
                           std::to_string(loaded.roles.size) + " pixel faces, avatar.json says " +
                           std::to_string(a.manifest().model_size));
  }
  LIPSYNC_ASSIGN_OR_RETURN(loaded.layout, FaceLayout::ForInputSize(loaded.roles.size));
  ScheduleAvatar(loaded, scheduler_);
  const bool encoder_shared = loaded.encoder != nullptr;
  if (!encoder_shared) {
    auto encoder = encoders_->Get(c.encoder_model, a.audio_encoder_path());
    if (!encoder.ok())
      return encoder.status().WithContext("loading the audio encoder of '" + id + "'");
    SetEncoder(loaded, std::move(*encoder), c.encoder_model);
  }

  auto frames = LoadAvatarFrames(a, frames_, loaded.layout);
  if (!frames.ok()) return frames.status().WithContext("loading avatar '" + id + "'");
  loaded.frames = std::move(*frames);
  const int64_t models = FileBytes(a.model_path());
  loaded.memory_bytes = models + loaded.frames.bytes();
  // On the GPU only when the engine really runs there (a GPU provider may fall back to the CPU).
  const bool on_gpu = loaded.unet->capabilities().device_id >= 0;
  loaded.gpu_bytes = on_gpu ? models : 0;
  int warm = options_.warmup_batch;
  if (warm < 0) {
    const int live = loaded.scheduler->live_max_batch();
    warm = on_gpu ? (live > 0 ? live : 8) : 0;
  }
  loaded.warmed_batch = std::min<int>(warm, static_cast<int>(loaded.unet->info().max_batch));
  LIPSYNC_RETURN_IF_ERROR(WarmUp(loaded));
  loaded.load_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  LogLoad(loaded, encoder_shared);
  return Status::Ok();
}

Result<std::shared_ptr<LoadedAvatar>> AvatarRegistry::Load(const std::string& id,
                                                           bool* loaded_now) {
  if (loaded_now) *loaded_now = false;
  if (t_loader_of == this) {
    LIPSYNC_RETURN_IF_ERROR(CheckLoadable(id));
    return LoadHere(id, loaded_now);
  }
  std::promise<std::pair<Result<std::shared_ptr<LoadedAvatar>>, bool>> done;
  LoadAsync(id, [&done](Result<std::shared_ptr<LoadedAvatar>> avatar, bool now) {
    done.set_value({std::move(avatar), now});
  });
  auto outcome = done.get_future().get();
  if (loaded_now) *loaded_now = outcome.second;
  return std::move(outcome.first);
}

Status AvatarRegistry::CheckLoadable(const std::string& id) const {
  LIPSYNC_RETURN_IF_ERROR(CheckModelId(id));
  return config_status_;
}

void AvatarRegistry::LoadAsync(const std::string& id, LoadDone done) {
  if (Status bad = CheckLoadable(id); !bad.ok()) return done(bad, false);
  if (auto found = Find(id)) return done(std::move(found), false);
  loader_->Post([this, id, done = std::move(done)] {
    std::optional<Result<std::shared_ptr<LoadedAvatar>>> avatar;
    bool loaded_now = false;
    const Status thrown = runtime::CatchAll("avatar load", [&] {
      avatar.emplace(LoadHere(id, &loaded_now));
      return Status::Ok();
    });
    if (!thrown.ok()) avatar.emplace(thrown);
    // The caller's continuation: a failure there is logged and leaves the loader serving.
    (void)runtime::CatchAll("avatar load callback", [&] {
      done(std::move(*avatar), loaded_now);
      return Status::Ok();
    });
  });
}

Result<std::shared_ptr<LoadedAvatar>> AvatarRegistry::LoadHere(const std::string& id,
                                                               bool* loaded_now) {
  if (loaded_now) *loaded_now = false;
  if (auto found = Find(id)) return found;  // loaded while this call waited
  if (options_.before_load) options_.before_load(id);

  std::vector<std::shared_ptr<LoadedAvatar>> dropped;  // freed after the lock, outside it
  auto fail = [&](const Status& status) -> Status {
    std::lock_guard lock(mu_);
    reserved_host_ = reserved_gpu_ = 0;
    Entry& e = EntryLocked(id);
    ++e.load_failures;
    e.reason = status.message();
    return status;
  };
  auto candidate = Prepare(id);
  if (!candidate.ok()) {
    if (candidate.status().code() == StatusCode::kNotFound && !catalog_.Find(id).ok()) {
      return candidate.status();  // unknown ids leave no trace in the index
    }
    return fail(candidate.status());
  }
  Candidate& c = *candidate;
  {
    std::lock_guard lock(mu_);
    Status room = MakeRoomLocked(id, c.host_bytes, c.gpu_bytes, true, *c.loaded, &dropped);
    if (!room.ok()) {
      Entry& e = EntryLocked(id);
      ++e.load_failures;
      e.reason = room.message();
      return room;
    }
    reserved_host_ = c.host_bytes;
    reserved_gpu_ = c.gpu_bytes;
  }
  dropped.clear();
  if (Status loaded = LoadModels(c); !loaded.ok()) return fail(loaded);

  std::lock_guard lock(mu_);
  reserved_host_ = reserved_gpu_ = 0;
  // The estimate assumed every frame as large as the first; make room for any difference.
  Status room =
      MakeRoomLocked(id, c.loaded->memory_bytes, c.loaded->gpu_bytes, true, *c.loaded, &dropped);
  if (!room.ok()) {
    Entry& failed = EntryLocked(id);
    ++failed.load_failures;
    failed.reason = room.message();
    return room;
  }
  Entry& e = EntryLocked(id);
  c.loaded->totals = e.totals;
  e.avatar = std::move(c.loaded);
  e.reason.clear();
  ++e.loads;
  if (loaded_now) *loaded_now = true;
  SyncWorkingLimitLocked();
  return LeaseLocked(e);
}

Status AvatarRegistry::Unload(const std::string& id) {
  std::shared_ptr<LoadedAvatar> dropped;
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || !it->second.avatar) {
    return NotFound("model '" + id + "' is not loaded");
  }
  Entry& e = it->second;
  dropped = std::move(e.avatar);
  e.avatar.reset();
  ++e.unloads;
  e.reason = "unloaded";
  if (dropped->pins.load() > 0) {
    retired_.push_back({dropped, dropped->memory_bytes, dropped->gpu_bytes, dropped->encoder,
                        dropped->encoder_host_bytes, dropped->encoder_gpu_bytes});
  }
  SyncWorkingLimitLocked();
  return Status::Ok();
}

Status AvatarRegistry::Preload() {
  std::vector<std::string> ids = catalog_.settings().preload;
  ids.insert(ids.end(), options_.preload.begin(), options_.preload.end());
  for (const auto& id : ids) {
    auto loaded = Load(id);
    if (!loaded.ok()) return loaded.status().WithContext("preloading '" + id + "'");
  }
  return Status::Ok();
}

std::vector<std::shared_ptr<LoadedAvatar>> AvatarRegistry::Loaded() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<LoadedAvatar>> out;
  for (auto& [id, e] : entries_) {
    if (e.avatar) out.push_back(LeaseLocked(e, /*use=*/false));  // listing is not a use
  }
  return out;
}

std::vector<std::string> AvatarRegistry::Available() const { return catalog_.Ids(); }

std::vector<AvatarState> AvatarRegistry::States() const {
  std::vector<std::string> ids = Available();
  std::lock_guard lock(mu_);
  for (const auto& [id, e] : entries_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::vector<AvatarState> out;
  for (const auto& id : ids) {
    AvatarState s;
    s.id = id;
    if (auto it = entries_.find(id); it != entries_.end()) {
      const Entry& e = it->second;
      s.loaded = e.avatar != nullptr;
      if (e.avatar) {
        s.pins = e.avatar->pins.load();
        s.host_bytes = e.avatar->memory_bytes;
        s.gpu_bytes = e.avatar->gpu_bytes;
        s.requests = e.avatar->requests.load();
      }
      s.total_requests = e.totals->requests.load();
      s.total_inference_us = e.totals->inference_us.load();
      s.loads = e.loads;
      s.unloads = e.unloads;
      s.evictions = e.evictions;
      s.load_failures = e.load_failures;
      s.reason = e.reason;
    }
    out.push_back(std::move(s));
  }
  return out;
}

int AvatarRegistry::gpu_id() const {
  return options_.engine.provider == "cpu" && options_.engine.backend != "cuda"
             ? -1
             : options_.engine.device_id;
}

}  // namespace lipsync::server
