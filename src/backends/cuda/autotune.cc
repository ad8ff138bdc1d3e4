#include "backends/cuda/autotune.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>

#include "lipsync/tensor.h"

namespace lipsync::cuda {
namespace {

constexpr int64_t kGuardElements = 256;  // per item, after every buffer of a tuning arena
constexpr unsigned char kPoison = 0xff;  // NaN in float and in half

std::string CudaText(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

int64_t AlignUp(int64_t n) {
  return (n + graph::kPlanAlignFloats - 1) / graph::kPlanAlignFloats * graph::kPlanAlignFloats;
}

struct Region {
  int64_t offset = 0, size = 0;  // elements per item
};

// The group's buffers in an arena of their own, each followed by a guard region, so that the
// unfused steps cannot overwrite the group's inputs and a stray write lands in a guard.
struct GroupArena {
  graph::Plan plan;         // the plan with the group's buffers moved
  std::vector<int> inputs;  // read by the group's steps, written by none
  int output = -1;          // the last step's output
  std::vector<Region> guards;
};

GroupArena MakeArena(const graph::Plan& plan, const FusedGroup& g) {
  GroupArena a;
  a.plan = plan;
  std::vector<int> ids, written;
  const auto add = [&ids](int id) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  for (size_t s = g.first; s < g.first + g.count; ++s) {
    for (int id : plan.steps[s].inputs) add(id);
    add(plan.steps[s].output);
    written.push_back(plan.steps[s].output);
  }
  int64_t at = AlignUp(kGuardElements);
  a.guards.push_back({0, at});
  for (int id : ids) {
    graph::PlanBuffer& b = a.plan.buffers[id];
    b.offset = at;
    const int64_t end = AlignUp(at + b.size + kGuardElements);
    a.guards.push_back({at + b.size, end - (at + b.size)});
    at = end;
    if (std::find(written.begin(), written.end(), id) == written.end()) a.inputs.push_back(id);
  }
  a.plan.arena_floats = at;
  a.output = plan.steps[g.first + g.count - 1].output;
  return a;
}

struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};

// Host values of one buffer for `batch` items: element i of item n is values[n % items][i].
struct HostInput {
  int id = -1;
  std::vector<std::vector<unsigned char>> items;  // raw storage bytes per distinct item
};

std::vector<unsigned char> Encode(const std::vector<float>& v, Storage storage) {
  std::vector<unsigned char> raw(v.size() * StorageSize(storage));
  if (storage == Storage::kFloat32) {
    std::memcpy(raw.data(), v.data(), raw.size());
  } else {
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = FloatToHalf(v[i]);
      std::memcpy(raw.data() + 2 * i, &h, 2);
    }
  }
  return raw;
}

std::vector<float> Decode(const std::vector<unsigned char>& raw, Storage storage) {
  std::vector<float> v(raw.size() / StorageSize(storage));
  if (storage == Storage::kFloat32) {
    std::memcpy(v.data(), raw.data(), raw.size());
  } else {
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      v[i] = HalfToFloat(h);
    }
  }
  return v;
}

// The spacing of float16 values near |x|.
double HalfUlp(double x) {
  x = std::fabs(x);
  if (x < 6.103515625e-05) return 5.9604644775390625e-08;  // subnormal range: 2^-24
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(x))) - 10);
}

}  // namespace

std::string OutputMismatch(const std::vector<float>& got, const std::vector<float>& want,
                           Storage storage) {
  double sum_sq = 0.0;
  for (float w : want) sum_sq += static_cast<double>(w) * w;
  const double rms = want.empty() ? 0.0 : std::sqrt(sum_sq / static_cast<double>(want.size()));
  const bool half = storage == Storage::kFloat16;
  double diff_sq = 0.0, worst = 0.0;
  size_t worst_at = 0, bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      return "mismatch: element " + std::to_string(i) + " is " + std::to_string(got[i]) +
             " (not written?), unfused " + std::to_string(want[i]);
    }
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double tolerance =
        half ? 4.0 * HalfUlp(want[i]) + 5e-3 * rms : 1e-4 * (std::fabs(want[i]) + rms);
    diff_sq += d * d;
    if (d > tolerance) ++bad;
    if (d > worst) {
      worst = d;
      worst_at = i;
    }
  }
  const double relative = sum_sq > 0.0 ? std::sqrt(diff_sq / sum_sq) : std::sqrt(diff_sq);
  const double relative_bound = half ? 2e-3 : 1e-5;
  if (bad == 0 && relative <= relative_bound) return "";
  char text[256];
  std::snprintf(text, sizeof(text),
                "mismatch: %zu of %zu elements outside tolerance, largest difference %.3g at "
                "element %zu (unfused %.4g, output RMS %.3g), relative L2 %.2g",
                bad, got.size(), worst, worst_at, want.empty() ? 0.0 : want[worst_at], rms,
                relative);
  return text;
}

namespace {

// One group's arena on the device at one batch size, with its inputs.
class Bench {
 public:
  Bench(const GroupArena& arena, const FusedGroup& group, Storage storage, const void* weights,
        int64_t batch, cudaStream_t stream)
      : a_(arena),
        group_(group),
        storage_(storage),
        weights_(weights),
        batch_(batch),
        stream_(stream) {}

  Status Allocate() {
    bytes_ = static_cast<size_t>(a_.plan.arena_floats * batch_) * StorageSize(storage_);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes_);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return ResourceExhausted("CUDA backend: no device memory to tune " + group_.name +
                               " at batch " + std::to_string(batch_));
    }
    memory_.reset(p);
    return Status::Ok();
  }

  // Random inputs in [-1, 1] (two distinct items, repeated over the batch).
  void MakeInputs(uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    inputs_.clear();
    for (int id : a_.inputs) {
      HostInput in;
      in.id = id;
      for (int k = 0; k < std::min<int64_t>(2, batch_); ++k) {
        std::vector<float> v(static_cast<size_t>(a_.plan.buffers[id].size));
        for (float& x : v) x = dist(rng);
        in.items.push_back(Encode(v, storage_));
      }
      inputs_.push_back(std::move(in));
    }
  }

  // Poison (or zero) everything, then upload the inputs.
  Status Reset(bool poison) {
    if (cudaMemsetAsync(memory_.get(), poison ? kPoison : 0, bytes_, stream_) != cudaSuccess) {
      return Fatal("clearing the tuning arena", cudaGetLastError());
    }
    for (const HostInput& in : inputs_) {
      for (int64_t n = 0; n < batch_; ++n) {
        const auto& item = in.items[static_cast<size_t>(n) % in.items.size()];
        if (cudaMemcpyAsync(Item(in.id, n), item.data(), item.size(), cudaMemcpyHostToDevice,
                            stream_) != cudaSuccess) {
          return Fatal("uploading tuning inputs", cudaGetLastError());
        }
      }
    }
    return Status::Ok();
  }

  // Poison on the output only: the inputs stay as uploaded (every buffer has its own space here).
  Status PoisonOutput() {
    const graph::PlanBuffer& b = a_.plan.buffers[a_.output];
    const size_t element = StorageSize(storage_);
    auto* start = static_cast<unsigned char*>(memory_.get()) +
                  static_cast<size_t>(b.offset * batch_) * element;
    if (cudaMemsetAsync(start, kPoison, static_cast<size_t>(b.size * batch_) * element, stream_) !=
        cudaSuccess) {
      return Fatal("clearing the tuning output", cudaGetLastError());
    }
    return Status::Ok();
  }

  // Enqueues the variant: launch errors come back as a status, not as a failure of the device.
  Status Enqueue(const GroupVariant& v) {
    const DeviceTensors t{storage_, memory_.get(), weights_};
    return EnqueueGroup(a_.plan, group_, v, batch_, t, stream_);
  }

  Status Sync(const std::string& what) {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    return e == cudaSuccess ? Status::Ok() : Fatal(what, e);
  }

  // Elements [offset, offset + count) of the arena (per-batch offsets).
  Result<std::vector<unsigned char>> Download(int64_t offset, int64_t count) {
    std::vector<unsigned char> raw(static_cast<size_t>(count) * StorageSize(storage_));
    const auto* src = static_cast<const unsigned char*>(memory_.get()) +
                      static_cast<size_t>(offset) * StorageSize(storage_);
    if (cudaMemcpy(raw.data(), src, raw.size(), cudaMemcpyDeviceToHost) != cudaSuccess) {
      return Fatal("downloading tuning results", cudaGetLastError());
    }
    return raw;
  }

  // Items `first` and `last` of the output, or all of it.
  Result<std::vector<float>> Output(const std::vector<int64_t>& items) {
    const graph::PlanBuffer& b = a_.plan.buffers[a_.output];
    std::vector<float> all;
    for (int64_t n : items) {
      LIPSYNC_ASSIGN_OR_RETURN(auto raw, Download(b.offset * batch_ + n * b.size, b.size));
      const std::vector<float> v = Decode(raw, storage_);
      all.insert(all.end(), v.begin(), v.end());
    }
    return all;
  }

  // Empty when the inputs are unchanged and every guard still holds the poison.
  Result<std::string> Untouched() {
    for (const HostInput& in : inputs_) {
      const graph::PlanBuffer& b = a_.plan.buffers[in.id];
      LIPSYNC_ASSIGN_OR_RETURN(auto raw, Download(b.offset * batch_, b.size * batch_));
      const size_t item = static_cast<size_t>(b.size) * StorageSize(storage_);
      for (int64_t n = 0; n < batch_; ++n) {
        const auto& want = in.items[static_cast<size_t>(n) % in.items.size()];
        if (std::memcmp(raw.data() + item * n, want.data(), item) != 0) {
          return "wrote into its input '" + b.name + "'";
        }
      }
    }
    for (const Region& g : a_.guards) {
      LIPSYNC_ASSIGN_OR_RETURN(auto raw, Download(g.offset * batch_, g.size * batch_));
      for (unsigned char byte : raw) {
        if (byte != kPoison) return std::string("wrote outside the buffers of the group");
      }
    }
    return std::string();
  }

  // The median milliseconds of `reps` runs after one warm-up into *ms, or the launch's error into
  // *launch. Fails only when the device does (a fault).
  Status Time(const GroupVariant& v, int reps, double* ms, Status* launch) {
    std::vector<cudaEvent_t> events(static_cast<size_t>(2 * reps), nullptr);
    const auto destroy = [&events] {
      for (auto e : events) {
        if (e) cudaEventDestroy(e);
      }
    };
    for (auto& e : events) {
      if (cudaEventCreate(&e) != cudaSuccess) {
        destroy();
        return Fatal("creating events", cudaGetLastError());
      }
    }
    *launch = Enqueue(v);
    for (int r = 0; r < reps && launch->ok(); ++r) {
      cudaEventRecord(events[2 * r], stream_);
      *launch = Enqueue(v);
      cudaEventRecord(events[2 * r + 1], stream_);
    }
    const Status synced = Sync("timing " + v.Name() + " of " + group_.name);
    if (!synced.ok() || !launch->ok()) {
      destroy();
      return synced;
    }
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) {
      float t = 0.0f;
      cudaEventElapsedTime(&t, events[2 * r], events[2 * r + 1]);
      times.push_back(t);
    }
    destroy();
    std::sort(times.begin(), times.end());
    *ms = times[times.size() / 2];
    return Status::Ok();
  }

  int64_t batch() const { return batch_; }

 private:
  Status Fatal(const std::string& what, cudaError_t e) const {
    return Internal("CUDA backend: " + what + " while tuning " + group_.name + " at batch " +
                    std::to_string(batch_) + ": " + CudaText(e));
  }
  void* Item(int id, int64_t n) const {
    const graph::PlanBuffer& b = a_.plan.buffers[id];
    return static_cast<unsigned char*>(memory_.get()) +
           static_cast<size_t>(b.offset * batch_ + n * b.size) * StorageSize(storage_);
  }

  const GroupArena& a_;
  const FusedGroup& group_;
  const Storage storage_;
  const void* weights_;
  const int64_t batch_;
  cudaStream_t stream_;
  size_t bytes_ = 0;
  std::unique_ptr<void, DeviceFree> memory_;
  std::vector<HostInput> inputs_;
};

// Step 1: every variant against the unfused steps at the check batch.
Status CheckVariants(const GroupArena& arena, TunedGroup& tg, Storage storage, const void* weights,
                     int64_t batch, cudaStream_t stream) {
  Bench bench(arena, tg.group, storage, weights, batch, stream);
  LIPSYNC_RETURN_IF_ERROR(bench.Allocate());
  bench.MakeInputs(static_cast<uint32_t>(tg.group.expand) * 7919u + 17u);
  std::vector<int64_t> all(static_cast<size_t>(batch));
  for (int64_t n = 0; n < batch; ++n) all[static_cast<size_t>(n)] = n;
  LIPSYNC_RETURN_IF_ERROR(bench.Reset(true));
  LIPSYNC_RETURN_IF_ERROR(bench.Enqueue(tg.variants[0].variant));
  LIPSYNC_RETURN_IF_ERROR(bench.Sync("running the unfused steps"));
  LIPSYNC_ASSIGN_OR_RETURN(const std::vector<float> want, bench.Output(all));
  for (size_t k = 1; k < tg.variants.size(); ++k) {
    TunedVariant& v = tg.variants[k];
    LIPSYNC_RETURN_IF_ERROR(bench.Reset(true));
    const Status launched = bench.Enqueue(v.variant);
    LIPSYNC_RETURN_IF_ERROR(bench.Sync("checking " + v.variant.Name()));
    if (!launched.ok()) {
      v.status = "launch failed: " + launched.message();
      continue;
    }
    LIPSYNC_ASSIGN_OR_RETURN(const std::vector<float> got, bench.Output(all));
    std::string why = OutputMismatch(got, want, storage);
    if (why.empty()) {
      LIPSYNC_ASSIGN_OR_RETURN(why, bench.Untouched());
    }
    if (!why.empty()) v.status = why + " (batch " + std::to_string(batch) + ")";
  }
  return Status::Ok();
}

// Step 2: the variants that passed, timed at `batch` (or less where memory is short), the first
// and last item checked again.
Status TimeVariants(const GroupArena& arena, TunedGroup& tg, Storage storage, const void* weights,
                    int64_t batch, int reps, cudaStream_t stream) {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) cudaGetLastError();
  const size_t per_item = static_cast<size_t>(arena.plan.arena_floats) * StorageSize(storage);
  while (batch > 1 && per_item * static_cast<size_t>(batch) > free_bytes / 2) batch /= 2;
  Bench bench(arena, tg.group, storage, weights, batch, stream);
  LIPSYNC_RETURN_IF_ERROR(bench.Allocate());
  bench.MakeInputs(static_cast<uint32_t>(tg.group.expand) * 104729u + 3u);
  const std::vector<int64_t> ends =
      batch > 1 ? std::vector<int64_t>{0, batch - 1} : std::vector<int64_t>{0};
  std::vector<float> want;
  LIPSYNC_RETURN_IF_ERROR(bench.Reset(false));
  for (size_t k = 0; k < tg.variants.size(); ++k) {
    TunedVariant& v = tg.variants[k];
    if (v.status != "ok") continue;
    LIPSYNC_RETURN_IF_ERROR(bench.PoisonOutput());
    double ms = 0.0;
    Status launch;
    LIPSYNC_RETURN_IF_ERROR(bench.Time(v.variant, reps, &ms, &launch));
    if (!launch.ok()) {
      if (k == 0) return launch;
      v.status = "launch failed: " + launch.message();
      continue;
    }
    LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> got, bench.Output(ends));
    if (k == 0) {
      want = std::move(got);
    } else {
      const std::string why = OutputMismatch(got, want, storage);
      if (!why.empty()) {
        v.status = why + " (batch " + std::to_string(batch) + ", first and last item)";
        continue;
      }
    }
    v.ms.emplace_back(batch, ms);
  }
  return Status::Ok();
}

}  // namespace

size_t KernelSchedule::BatchClass(int64_t batch) const {
  size_t best = 0;
  double best_distance = INFINITY;
  for (size_t k = 0; k < batches.size(); ++k) {
    const double d = std::fabs(std::log(static_cast<double>(std::max<int64_t>(batch, 1))) -
                               std::log(static_cast<double>(batches[k])));
    if (d < best_distance) {
      best_distance = d;
      best = k;
    }
  }
  return best;
}

std::vector<int64_t> TuningBatches(int64_t max_batch) {
  const int64_t large = std::min<int64_t>(std::max<int64_t>(max_batch, 1), 32);
  return large > 1 ? std::vector<int64_t>{1, large} : std::vector<int64_t>{1};
}

Result<KernelSchedule> TuneKernels(const graph::Plan& plan, Storage storage, const void* weights,
                                   const DeviceLimits& limits, const TuneOptions& options) {
  KernelSchedule schedule;
  schedule.batches = options.batches.empty() ? std::vector<int64_t>{1} : options.batches;
  schedule.group_at.assign(plan.steps.size(), -1);
  if (options.mode == CudaKernels::kUnfused) return schedule;
  cudaStream_t stream = nullptr;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    return Internal("CUDA backend: cannot create the tuning stream: " +
                    CudaText(cudaGetLastError()));
  }
  for (const FusedGroup& group : FindFusedGroups(plan, storage, limits)) {
    TunedGroup tg;
    tg.group = group;
    for (const GroupVariant& v : GroupVariants(plan, group, storage, limits)) {
      tg.variants.push_back(TunedVariant{v, "ok", {}});
    }
    const GroupArena arena = MakeArena(plan, group);
    const int64_t check = std::min(options.check_batch, schedule.batches.back());
    Status s = CheckVariants(arena, tg, storage, weights, std::max<int64_t>(check, 1), stream);
    for (size_t b = 0; s.ok() && b < schedule.batches.size(); ++b) {
      s = TimeVariants(arena, tg, storage, weights, schedule.batches[b], options.reps, stream);
    }
    if (s.code() == StatusCode::kResourceExhausted) {
      // No memory to try the group here: it keeps its steps, and the report says why.
      for (size_t k = 1; k < tg.variants.size(); ++k) tg.variants[k].status = s.message();
    } else if (!s.ok()) {
      cudaStreamDestroy(stream);
      return s;
    }
    // Choose per tuning batch; a variant missing a time at that batch is not a candidate.
    for (size_t b = 0; b < schedule.batches.size(); ++b) {
      size_t chosen = 0;
      double best = INFINITY;
      for (size_t k = 0; k < tg.variants.size(); ++k) {
        const TunedVariant& v = tg.variants[k];
        if (v.status != "ok" || v.ms.size() <= b) continue;
        if (options.mode == CudaKernels::kFused && k > 0) {
          chosen = k;
          break;
        }
        if (v.ms[b].second < best) {
          best = v.ms[b].second;
          chosen = k;
        }
      }
      tg.chosen.push_back(chosen);
    }
    schedule.group_at[group.first] = static_cast<int>(schedule.groups.size());
    schedule.groups.push_back(std::move(tg));
  }
  cudaStreamDestroy(stream);
  return schedule;
}

KernelReport MakeKernelReport(const KernelSchedule& schedule, int fixed_kernels) {
  KernelReport report;
  for (const TunedGroup& g : schedule.groups) {
    KernelGroupReport r;
    r.name = g.group.name;
    for (const TunedVariant& v : g.variants) {
      r.variants.push_back(KernelVariantReport{v.variant.Name(), v.status, v.ms});
    }
    for (size_t b = 0; b < schedule.batches.size(); ++b) {
      r.chosen.emplace_back(schedule.batches[b], g.variants[g.chosen[b]].variant.Name());
    }
    report.groups.push_back(std::move(r));
  }
  for (size_t b = 0; b < schedule.batches.size(); ++b) {
    int kernels = fixed_kernels;
    for (const TunedGroup& g : schedule.groups) {
      kernels += g.variants[g.chosen[b]].variant.Kernels(g.group);
    }
    report.kernels_per_forward.emplace_back(schedule.batches[b], kernels);
  }
  return report;
}

}  // namespace lipsync::cuda
