// The registry's metrics in the Prometheus text format: each avatar's state, the budgets, and the
// device's memory and scheduler as the backends and the pool report them.
#include <fmt/format.h>

#include <set>

#include "lipsync/memory.h"
#include "server/core/avatar_registry.h"
#include "server/core/metrics.h"

namespace lipsync::server {

void AvatarRegistry::RenderPrometheus(std::string* out) const {
  const std::vector<AvatarState> states = States();
  const AvatarUsage usage = Usage();
  auto family = [out](const char* name, const char* type, const char* help) {
    *out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto each = [&](const char* name, const char* type, const char* help, auto value) {
    family(name, type, help);
    for (const AvatarState& s : states) {
      *out += fmt::format("{}{{avatar=\"{}\"}} {}\n", name, PrometheusLabel(s.id), value(s));
    }
  };
  each("lipsync_avatar_loaded", "gauge", "1 when the avatar is loaded.",
       [](const AvatarState& s) { return s.loaded ? 1 : 0; });
  each("lipsync_avatar_in_use", "gauge", "Leases held on the avatar (requests working on it).",
       [](const AvatarState& s) { return s.pins; });
  family("lipsync_avatar_memory_bytes", "gauge",
         "Memory the loaded avatar counts against the budgets by kind (host, gpu): its frames and "
         "UNet; the audio encoders, shared by the avatars whose encoders are the same model, are "
         "in lipsync_avatar_memory_used_bytes once each.");
  for (const AvatarState& s : states) {
    *out += fmt::format("lipsync_avatar_memory_bytes{{avatar=\"{}\",kind=\"host\"}} {}\n",
                        PrometheusLabel(s.id), s.host_bytes);
    *out += fmt::format("lipsync_avatar_memory_bytes{{avatar=\"{}\",kind=\"gpu\"}} {}\n",
                        PrometheusLabel(s.id), s.gpu_bytes);
  }
  each("lipsync_avatar_requests_total", "counter", "Requests served by the avatar.",
       [](const AvatarState& s) { return s.total_requests; });
  each("lipsync_avatar_inference_seconds_total", "counter",
       "UNet time of the avatar's requests and sessions.",
       [](const AvatarState& s) { return s.total_inference_us / 1e6; });
  each("lipsync_avatar_loads_total", "counter", "Loads of the avatar.",
       [](const AvatarState& s) { return s.loads; });
  each("lipsync_avatar_unloads_total", "counter", "Unloads of the avatar asked for by a client.",
       [](const AvatarState& s) { return s.unloads; });
  each("lipsync_avatar_evictions_total", "counter", "Evictions of the avatar to make room.",
       [](const AvatarState& s) { return s.evictions; });
  each("lipsync_avatar_load_failures_total", "counter", "Loads of the avatar that failed.",
       [](const AvatarState& s) { return s.load_failures; });
  family("lipsync_avatars_loaded", "gauge", "Avatars loaded.");
  *out += fmt::format("lipsync_avatars_loaded {}\n", usage.loaded);
  family("lipsync_audio_encoders_loaded", "gauge",
         "Distinct audio encoders the avatars hold (one per distinct encoder model).");
  *out += fmt::format("lipsync_audio_encoders_loaded {}\n", usage.encoders);
  family("lipsync_avatars_max", "gauge", "Avatars loaded at once at most.");
  *out += fmt::format("lipsync_avatars_max {}\n", max_models_);
  family("lipsync_avatar_memory_used_bytes", "gauge",
         "Memory of loaded avatars, of unloaded ones still in use, and of a load under way.");
  *out += fmt::format("lipsync_avatar_memory_used_bytes{{kind=\"host\"}} {}\n", usage.host_bytes);
  *out += fmt::format("lipsync_avatar_memory_used_bytes{{kind=\"gpu\"}} {}\n", usage.gpu_bytes);
  family("lipsync_avatar_memory_budget_bytes", "gauge", "Memory budget for avatars (0: none).");
  *out += fmt::format("lipsync_avatar_memory_budget_bytes{{kind=\"host\"}} {}\n", max_host_bytes_);
  *out += fmt::format("lipsync_avatar_memory_budget_bytes{{kind=\"gpu\"}} {}\n", max_gpu_bytes_);
  RenderDeviceMetrics(out);
}

// The memory of the device and what its scheduler ran, as the backends and the pool report them.
void AvatarRegistry::RenderDeviceMetrics(std::string* out) const {
  int64_t host_weights = 0, device_weights = 0, frames = 0;
  std::set<const AudioEncoder*> encoders;
  const auto add_weights = [&](const Engine& engine) {
    const EngineMemory m = engine.memory();
    host_weights += m.host_weights;
    device_weights += m.device_weights;
  };
  for (const auto& a : Loaded()) {
    add_weights(*a->unet);
    if (encoders.insert(a->encoder.get()).second) add_weights(a->encoder->engine());
    frames += a->frames.bytes();
  }
  const HostMemoryStats pool = HostMemory().stats();
  *out +=
      "# HELP lipsync_memory_bytes Memory by device and kind: the models' weights (UNets, and "
      "audio encoders once each), the avatars' "
      "frames, working memory in use by runs, kept for reuse and the most in use at once (host: "
      "the process-wide pool; cuda:N: the device's pool).\n"
      "# TYPE lipsync_memory_bytes gauge\n";
  const auto line = [out](const char* device, const char* kind, int64_t bytes) {
    *out +=
        fmt::format("lipsync_memory_bytes{{device=\"{}\",kind=\"{}\"}} {}\n", device, kind, bytes);
  };
  line("host", "weights", host_weights);
  line("host", "frames", frames);
  line("host", "working", pool.working_in_use);
  line("host", "working_cached", pool.cached);
  line("host", "working_peak", pool.peak_working);
  // Page faults' worth of memory: a warm server under a steady load takes none.
  *out += fmt::format(
      "# HELP lipsync_memory_fresh_bytes_total Working memory the host pool took from the system "
      "instead of reusing a block it kept.\n"
      "# TYPE lipsync_memory_fresh_bytes_total counter\n"
      "lipsync_memory_fresh_bytes_total{{device=\"host\"}} {}\n",
      pool.fresh_total);
  // The GPU's weights even before its pool exists; every device pool's working memory.
  std::vector<DeviceMemoryStats> pools = DeviceMemoryPools();
  if (gpu_id() >= 0) {
    const std::string gpu = "cuda:" + std::to_string(gpu_id());
    line(gpu.c_str(), "weights", device_weights);
    if (std::none_of(pools.begin(), pools.end(),
                     [&](const DeviceMemoryStats& s) { return s.device == gpu_id(); })) {
      pools.push_back(DeviceWorking(gpu_id()));
    }
  }
  for (const DeviceMemoryStats& s : pools) {
    const std::string gpu = "cuda:" + std::to_string(s.device);
    line(gpu.c_str(), "working", s.working_in_use);
    line(gpu.c_str(), "working_cached", s.cached);
    line(gpu.c_str(), "working_peak", s.peak_working);
  }
  const runtime::SchedulerTotals t = scheduler_->totals();
  const std::string device = PrometheusLabel(scheduler_->device());
  *out += fmt::format(
      "# HELP lipsync_scheduler_batches_total UNet batches the device's scheduler ran.\n"
      "# TYPE lipsync_scheduler_batches_total counter\n"
      "lipsync_scheduler_batches_total{{device=\"{0}\"}} {1}\n"
      "# HELP lipsync_scheduler_mixed_batches_total Batches with frames of more than one origin.\n"
      "# TYPE lipsync_scheduler_mixed_batches_total counter\n"
      "lipsync_scheduler_mixed_batches_total{{device=\"{0}\"}} {2}\n"
      "# HELP lipsync_scheduler_failed_batches_total Batches whose run failed.\n"
      "# TYPE lipsync_scheduler_failed_batches_total counter\n"
      "lipsync_scheduler_failed_batches_total{{device=\"{0}\"}} {3}\n"
      "# HELP lipsync_scheduler_frames_total Frames run, by the protocol that sent them.\n"
      "# TYPE lipsync_scheduler_frames_total counter\n",
      device, t.batches, t.mixed_batches, t.failed_batches);
  for (int o = 0; o < runtime::kOriginCount; ++o) {
    if (static_cast<runtime::Origin>(o) == runtime::Origin::kRender) continue;  // not the server's
    *out += fmt::format("lipsync_scheduler_frames_total{{device=\"{}\",origin=\"{}\"}} {}\n",
                        device, runtime::OriginName(static_cast<runtime::Origin>(o)),
                        t.rows_by_origin[static_cast<size_t>(o)]);
  }
}

}  // namespace lipsync::server
