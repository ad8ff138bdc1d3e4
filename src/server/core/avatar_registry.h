// The avatar repository: avatars loaded on demand from a folder of avatar folders or from a YAML
// config (lipsync's own, or the Go server's config.yaml; docs/AVATARS.md), within a model cap and
// host and GPU memory budgets, evicting the least recently used idle avatar to make room.
//
// Every shared_ptr that Find and Load hand out is a lease: it pins the avatar (counted in
// LoadedAvatar::pins) until the last copy of it is dropped, and a pinned avatar is never evicted.
// Pins are taken under the registry's lock, so an eviction decision cannot race a request taking
// the avatar. Unload drops the registry's reference at once; an avatar still leased keeps its
// memory (and keeps counting against the budgets) until its last lease goes.
//
// Loads, and the imports and exports before them (a Go model into the cache, a package through
// a service's LoadModel: minutes of a Python export), run one at a time on the registry's loader
// thread, never on the threads that serve inference.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "lipsync/audio.h"
#include "lipsync/avatar.h"
#include "lipsync/engine.h"
#include "lipsync/memory.h"
#include "pipeline/stream/frame_store.h"
#include "runtime/scheduler.h"
#include "server/core/avatar_catalog.h"
#include "server/core/shared_encoders.h"
#include "server/core/worker_pool.h"

namespace lipsync::server {

// Counters of one model id that outlive its loads (Prometheus counters must not go back).
struct AvatarTotals {
  std::atomic<int64_t> requests{0};
  std::atomic<int64_t> inference_us{0};
};

struct LoadedAvatar {
  std::string id;
  Avatar avatar;
  std::unique_ptr<Engine> unet;
  // The UNet on its device's scheduler, where every caller runs it (after `unet`: goes first).
  std::shared_ptr<runtime::Scheduler> scheduler;
  std::shared_ptr<runtime::ScheduledModel> scheduled;
  // Shared with the loaded avatars whose encoder models hold the same bytes (SharedEncoders).
  std::shared_ptr<AudioEncoder> encoder;
  UnetInputs roles;
  FaceLayout layout;
  stream::FrameStore frames;  // read once at load, decoded or encoded (AvatarRegistryOptions)
  // What counts against the budgets. The avatar's own: host, its frames and UNet file; GPU,
  // the UNet file when the UNet runs on a GPU. Its encoder's (model files; GPU bytes when it runs
  // on a GPU) count once however many avatars share it.
  int64_t memory_bytes = 0;
  int64_t gpu_bytes = 0;
  int64_t encoder_host_bytes = 0, encoder_gpu_bytes = 0;
  double load_ms = 0;
  int warmed_batch = 0;  // the UNet ran once at each batch 1..warmed_batch as it loaded

  // Statistics of this load, updated by requests without a lock.
  std::atomic<int64_t> requests{0};
  std::atomic<int64_t> inference_us{0};  // UNet time of its requests and sessions
  std::atomic<int64_t> last_used_unix_s{0};
  // Leases handed out and not yet dropped (the registry's own reference is not one).
  std::atomic<int> pins{0};
  std::shared_ptr<AvatarTotals> totals = std::make_shared<AvatarTotals>();

  // Counts one finished request and its UNet time, here and in the id's totals (a live session's
  // time is added per batch by the scheduler: 0 for it).
  void RecordRequest(double inference_ms = 0);
};

// Puts the avatar's UNet (with its roles and layout set) on `scheduler`.
void ScheduleAvatar(LoadedAvatar& avatar, std::shared_ptr<runtime::Scheduler> scheduler);

struct AvatarRegistryOptions {
  // A folder of avatar folders (model id = folder name) or a YAML config file (.yaml or .yml).
  std::string root;
  EngineOptions engine;  // for both models of every avatar
  int max_models = 8;    // avatars loaded at once at most
  // How avatars' frames are held: decoded (each frame's pixels, no work per use) or encoded (the
  // image files' bytes, or a video's frames as PNG: a tenth to a thirtieth of the memory, one
  // decode per frame served; docs/PERFORMANCE.md measures both).
  stream::FrameStorage frames = stream::FrameStorage::kDecoded;
  // Budgets in bytes (0: none): host memory for loaded avatars (their frames and model files)
  // and the working memory of runs (the host pool's, lipsync/memory.h), and GPU memory (the model
  // files, when the engine runs on a GPU, and the device pool's working memory).
  int64_t max_host_bytes = 0;
  int64_t max_gpu_bytes = 0;
  std::vector<std::string> preload;  // loaded by Preload(), after the config's own list
  std::string audio_encoder;         // for the Go server's models when the config names none
  std::string cache_dir;             // where Go models become avatar folders (default: temp)
  // Before an avatar serves, its UNet runs once (on zeros, through the scheduler) at each batch
  // size N..1, so that no live session meets a batch size's first run: the CUDA backend captures
  // a graph for each batch size, which takes many times a run. -1: the scheduler's live batch
  // limit (8 when unset) where the UNet runs on a GPU, none on the CPU, where it did not shorten
  // live sessions' slow first and last frames (docs/PERFORMANCE.md); 0: none.
  int warmup_batch = -1;
  // Limits (and `frames`) set by the caller win over the config file's; those not set come from it.
  bool max_models_set = false, max_host_set = false, max_gpu_set = false, frames_set = false;
  // The scheduler of the device the avatars run on, when other callers share it (the server's
  // own model); null or another device's: the registry makes its own.
  std::shared_ptr<runtime::Scheduler> scheduler;
  // Runs on the loader thread as each load of an avatar not loaded begins (tests hold a load in
  // progress with it); empty: nothing.
  std::function<void(const std::string& id)> before_load;
};

// What the repository index and the metrics show of one model id; taking it pins nothing.
struct AvatarState {
  std::string id;
  bool loaded = false;
  int pins = 0;
  int64_t host_bytes = 0, gpu_bytes = 0;
  int64_t requests = 0;        // since this load (0 when not loaded)
  int64_t total_requests = 0;  // since the server started
  int64_t total_inference_us = 0;
  int64_t loads = 0, unloads = 0, evictions = 0, load_failures = 0;
  std::string reason;  // why it is not loaded: "unloaded", "evicted", or the last load's error
};

struct AvatarUsage {
  int loaded = 0;
  int encoders = 0;  // distinct audio encoders the avatars hold
  // Loaded plus unloaded-but-leased plus the load under way, each shared encoder once.
  int64_t host_bytes = 0, gpu_bytes = 0;
};

class AvatarRegistry {
 public:
  // A folder root is only checked when used; for a YAML root prefer Create, which reports a bad
  // config at once (here it is reported by every Load).
  explicit AvatarRegistry(AvatarRegistryOptions options);
  static Result<std::unique_ptr<AvatarRegistry>> Create(AvatarRegistryOptions options);
  ~AvatarRegistry();

  // The loaded avatar (a lease, which also counts as a use for eviction order), or nullptr.
  std::shared_ptr<LoadedAvatar> Find(const std::string& id) const;
  // Loads `id` unless it is loaded; `loaded_now` tells which. The load runs on the loader thread
  // (directly when called there); the caller waits for it. NotFound for an unknown id,
  // InvalidArgument for an id that is not a plain name, ResourceExhausted when the model cap or
  // a budget cannot be met even after evicting every idle avatar, and the avatar's load errors.
  Result<std::shared_ptr<LoadedAvatar>> Load(const std::string& id, bool* loaded_now = nullptr);
  // Load without waiting: `done` gets what Load returns and `loaded_now`. It runs on the calling
  // thread when `id` is loaded already or cannot be (a bad id, a bad config) and on the loader
  // thread, once the load is over, otherwise; the loader's next load waits for it, so it should
  // only hand the lease on (post it to the caller's workers, say).
  using LoadDone =
      std::function<void(Result<std::shared_ptr<LoadedAvatar>> avatar, bool loaded_now)>;
  void LoadAsync(const std::string& id, LoadDone done);
  // NotFound when `id` is not loaded.
  Status Unload(const std::string& id);
  // Loads the config's preload list, then options.preload; stops at the first failure.
  Status Preload();

  // Leases on every loaded avatar (hold them briefly: they pin; listing does not count as a use).
  std::vector<std::shared_ptr<LoadedAvatar>> Loaded() const;
  // Model ids that can be loaded, sorted.
  std::vector<std::string> Available() const;
  // Every available or loaded id and what happened to it, sorted by id.
  std::vector<AvatarState> States() const;
  AvatarUsage Usage() const;
  int max_models() const { return max_models_; }
  int64_t max_host_bytes() const { return max_host_bytes_; }
  int64_t max_gpu_bytes() const { return max_gpu_bytes_; }
  stream::FrameStorage frame_storage() const { return frames_; }
  // 0 on a GPU provider, -1 on the CPU (the Go server's convention for "no GPU").
  int gpu_id() const;
  // The scheduler of the device the avatars' UNets run on.
  runtime::Scheduler& scheduler() const { return *scheduler_; }
  // The loader thread: services post their load and import calls here, so that a slow import
  // holds no inference worker. Work posted runs in order, one at a time.
  WorkerPool& loader() { return *loader_; }
  // Appends the per-avatar and budget metrics in the Prometheus text format.
  void RenderPrometheus(std::string* out) const;

 private:
  struct Entry {
    std::shared_ptr<LoadedAvatar> avatar;  // the registry's reference; null when not loaded
    uint64_t last_use = 0;
    std::shared_ptr<AvatarTotals> totals = std::make_shared<AvatarTotals>();
    int64_t loads = 0, unloads = 0, evictions = 0, load_failures = 0;
    std::string reason;
  };
  struct Retired {
    std::weak_ptr<LoadedAvatar> avatar;
    int64_t host_bytes = 0, gpu_bytes = 0;
    std::weak_ptr<AudioEncoder> encoder;
    int64_t encoder_host_bytes = 0, encoder_gpu_bytes = 0;
  };
  struct Candidate;
  // A lease on a loaded entry; `use` moves it to the back of the eviction order.
  std::shared_ptr<LoadedAvatar> LeaseLocked(Entry& entry, bool use = true) const;
  // An id a load may try: a plain name, and a config that parsed.
  Status CheckLoadable(const std::string& id) const;
  // Load's work, on the loader thread.
  Result<std::shared_ptr<LoadedAvatar>> LoadHere(const std::string& id, bool* loaded_now);
  Result<Candidate> Prepare(const std::string& id) const;
  Status LoadModels(Candidate& candidate) const;
  // Evicts idle avatars, least recently used first, until `host` and `gpu` more bytes and one
  // more avatar fit; the evicted go to `dropped`, to be freed outside the lock. The encoder that
  // `incoming` (the avatar being loaded) holds already counts as held.
  Status MakeRoomLocked(const std::string& id, int64_t host, int64_t gpu, bool one_more,
                        const LoadedAvatar& incoming,
                        std::vector<std::shared_ptr<LoadedAvatar>>* dropped);
  // What the avatars hold, with the encoder of `incoming` (when given) counted as held.
  AvatarUsage UsageLocked(const LoadedAvatar* incoming = nullptr) const;
  Entry* IdleVictimLocked(const std::string& except, std::vector<std::string>* busy) const;
  // The pools' limits: the host budget less the avatars' host memory, and the GPU budget less
  // their GPU memory for the GPU's pool.
  void SyncWorkingLimitLocked() const;
  // A GPU budget on a GPU: the device pool's working memory counts in it.
  bool gpu_budget() const { return max_gpu_bytes_ > 0 && gpu_id() >= 0; }
  // Evicts the least recently used idle avatar for a run's working memory; false: none.
  bool MakeWorkingRoom();
  void RenderDeviceMetrics(std::string* out) const;
  // The working-memory pool of GPU `device` (all zero before a CUDA engine has run there).
  static DeviceMemoryStats DeviceWorking(int device);
  Entry& EntryLocked(const std::string& id) const;

  AvatarRegistryOptions options_;
  Status config_status_;
  AvatarCatalog catalog_;
  int max_models_ = 8;
  int64_t max_host_bytes_ = 0, max_gpu_bytes_ = 0;
  stream::FrameStorage frames_ = stream::FrameStorage::kDecoded;
  std::shared_ptr<runtime::Scheduler> scheduler_;
  std::unique_ptr<SharedEncoders> encoders_;  // used on the loader thread

  mutable std::mutex mu_;  // guards everything below up to loader_
  mutable std::map<std::string, Entry> entries_;
  mutable std::vector<Retired> retired_;  // unloaded while leased
  mutable uint64_t tick_ = 0;             // use order for LRU
  int64_t reserved_host_ = 0, reserved_gpu_ = 0;
  // One thread, so an avatar is never loaded twice; stopped first by the destructor.
  std::unique_ptr<WorkerPool> loader_;
};

}  // namespace lipsync::server
