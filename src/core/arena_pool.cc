#include "core/arena_pool.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>

namespace lipsync {
namespace {

constexpr size_t kGrain = 1 << 20;  // arenas in whole MiB, so that near needs share one

size_t RoundUp(size_t bytes) { return (std::max<size_t>(bytes, 1) + kGrain - 1) / kGrain * kGrain; }

std::string Mib(int64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

}  // namespace

ArenaPool::Lease& ArenaPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    slot_ = other.slot_;
    data_ = other.data_;
    size_ = other.size_;
    generation_ = other.generation_;
    other.pool_ = nullptr;
    other.slot_ = -1;
  }
  return *this;
}

void ArenaPool::Lease::Release() {
  if (pool_) pool_->ReleaseSlot(slot_);
  pool_ = nullptr;
  slot_ = -1;
  data_ = nullptr;
  size_ = 0;
}

ArenaPool::ArenaPool(ArenaAllocator allocator, int slots) : allocator_(std::move(allocator)) {
  slots_.resize(static_cast<size_t>(std::max(slots, 1)));
}

ArenaPool::~ArenaPool() {
  for (Slot& s : slots_) {
    if (s.data) allocator_.free(s.data);
  }
}

int ArenaPool::PickLocked(size_t bytes, int preferred) const {
  if (preferred >= 0 && preferred < static_cast<int>(slots_.size()) && !slots_[preferred].busy) {
    return preferred;
  }
  int fits = -1, largest = -1;
  for (int i = 0; i < static_cast<int>(slots_.size()); ++i) {
    const Slot& s = slots_[static_cast<size_t>(i)];
    if (s.busy) continue;
    if (s.size >= bytes && (fits < 0 || s.size < slots_[static_cast<size_t>(fits)].size)) fits = i;
    if (largest < 0 || s.size > slots_[static_cast<size_t>(largest)].size) largest = i;
  }
  return fits >= 0 ? fits : largest;
}

void ArenaPool::DropLocked(Slot& s) {
  to_free_.push_back(s.data);
  const auto size = static_cast<int64_t>(s.size);
  (s.busy ? in_use_ : cached_) -= size;
  if (!s.busy) trimmed_ += size;
  s.data = nullptr;
  s.size = 0;
}

void ArenaPool::DropIdleLocked(const std::function<bool()>& more) {
  while (more()) {
    Slot* oldest = nullptr;
    for (Slot& s : slots_) {
      if (!s.busy && s.data && (!oldest || s.last_used < oldest->last_used)) oldest = &s;
    }
    if (!oldest) return;
    DropLocked(*oldest);
  }
}

void ArenaPool::DropAgedLocked(Clock::time_point now) {
  for (Slot& s : slots_) {
    if (!s.busy && s.data && now - s.last_used >= max_age_) DropLocked(s);
  }
}

void ArenaPool::FreeCollected(std::vector<void*>& blocks) {
  for (void* p : blocks) allocator_.free(p);
  blocks.clear();
}

Result<ArenaPool::Lease> ArenaPool::Acquire(size_t bytes, int preferred) {
  std::vector<void*> release;
  Lease lease;
  size_t size = 0;
  {
    std::unique_lock lock(mu_);
    int slot = -1;
    ++waiting_;
    free_slot_.wait(lock, [&] { return (slot = PickLocked(bytes, preferred)) >= 0; });
    --waiting_;
    Slot& s = slots_[static_cast<size_t>(slot)];
    s.busy = true;
    in_use_ += static_cast<int64_t>(s.size);
    cached_ -= static_cast<int64_t>(s.size);
    lease.pool_ = this;
    lease.slot_ = slot;
    DropAgedLocked(Clock::now());
    if (s.size >= bytes) {
      peak_ = std::max(peak_, in_use_);
      lease.data_ = s.data;
      lease.size_ = s.size;
      lease.generation_ = s.generation;
      return lease;
    }
    // Too small: the old arena goes first, then idle ones while the new one would not fit.
    if (s.data) DropLocked(s);
    size = RoundUp(bytes);
    const auto grown = static_cast<int64_t>(size);
    DropIdleLocked([&] { return limit_ > 0 && in_use_ + cached_ + grown > limit_; });
    if (limit_ > 0 && in_use_ + grown > limit_) {
      ++refused_;
      const std::string why = "GPU working memory: a run needs " + Mib(grown) + ", runs hold " +
                              Mib(in_use_) + " and the limit is " + Mib(limit_);
      release.swap(to_free_);
      lock.unlock();
      FreeCollected(release);
      return ResourceExhausted(why);  // `lease` gives the slot back
    }
    in_use_ += grown;  // reserved before the allocation, which runs without the lock
    release.swap(to_free_);
  }
  FreeCollected(release);
  void* data = allocator_.allocate(size);
  if (!data) {  // the device is fuller than the limit knows: free every idle arena and retry
    {
      std::lock_guard lock(mu_);
      DropIdleLocked([] { return true; });
      release.swap(to_free_);
    }
    FreeCollected(release);
    data = allocator_.allocate(size);
  }
  std::lock_guard lock(mu_);
  if (!data) {
    in_use_ -= static_cast<int64_t>(size);
    ++refused_;
    return ResourceExhausted("GPU working memory: the device has no " + Mib(size) +
                             " free for a run's arena");
  }
  Slot& s = slots_[static_cast<size_t>(lease.slot_)];
  s.data = data;
  s.size = size;
  s.generation = ++next_generation_;
  peak_ = std::max(peak_, in_use_);
  lease.data_ = data;
  lease.size_ = size;
  lease.generation_ = s.generation;
  return lease;
}

void ArenaPool::ReleaseSlot(int slot) {
  std::vector<void*> release;
  {
    std::lock_guard lock(mu_);
    Slot& s = slots_[static_cast<size_t>(slot)];
    in_use_ -= static_cast<int64_t>(s.size);
    cached_ += static_cast<int64_t>(s.size);
    s.busy = false;
    s.last_used = Clock::now();
    // A limit lowered while the slot was held: idle arenas go until the pool fits again.
    DropIdleLocked([&] { return limit_ > 0 && in_use_ + cached_ > limit_; });
    release.swap(to_free_);
  }
  free_slot_.notify_one();
  FreeCollected(release);
}

bool ArenaPool::Live(uint64_t generation) const {
  std::lock_guard lock(mu_);
  for (const Slot& s : slots_) {
    if (s.data && s.generation == generation) return true;
  }
  return false;
}

void ArenaPool::EnsureSlots(int count) {
  {
    std::lock_guard lock(mu_);
    if (count > static_cast<int>(slots_.size())) slots_.resize(static_cast<size_t>(count));
  }
  free_slot_.notify_all();
}

DeviceMemoryStats ArenaPool::stats() const {
  std::lock_guard lock(mu_);
  DeviceMemoryStats s;
  s.slots = static_cast<int>(slots_.size());
  s.waiting = waiting_;
  s.working_in_use = in_use_;
  s.cached = cached_;
  s.peak_working = peak_;
  s.limit = limit_;
  s.trimmed_total = trimmed_;
  s.refused_total = refused_;
  return s;
}

int64_t ArenaPool::Trim(int64_t keep_bytes) {
  std::vector<void*> release;
  int64_t freed = 0;
  {
    std::lock_guard lock(mu_);
    const int64_t before = trimmed_;
    if (keep_bytes < 0) {
      DropAgedLocked(Clock::now());
    } else {
      DropIdleLocked([&] { return cached_ > keep_bytes; });
    }
    freed = trimmed_ - before;
    release.swap(to_free_);
  }
  FreeCollected(release);
  return freed;
}

void ArenaPool::SetLimit(int64_t bytes) {
  std::vector<void*> release;
  {
    std::lock_guard lock(mu_);
    limit_ = std::max<int64_t>(0, bytes);
    DropIdleLocked([&] { return limit_ > 0 && in_use_ + cached_ > limit_; });
    release.swap(to_free_);
  }
  FreeCollected(release);
}

void ArenaPool::SetMaxAge(Clock::duration age) {
  std::lock_guard lock(mu_);
  max_age_ = age;
}

int64_t ArenaPool::ResetPeak() {
  std::lock_guard lock(mu_);
  const int64_t previous = peak_;
  peak_ = in_use_;
  return previous;
}

namespace {

// The device pools and the limits set for devices, pools or not. Never destroyed: a pool freed at
// exit would call into a device runtime already shut down.
struct DevicePools {
  std::mutex mu;
  std::map<int, std::unique_ptr<ArenaPool>> pools;
  std::map<int, int64_t> limits;
};

DevicePools& Devices() {
  static auto* devices = new DevicePools;
  return *devices;
}

}  // namespace

ArenaPool& DeviceArenaPool(int device, const std::function<ArenaAllocator()>& make) {
  DevicePools& d = Devices();
  std::lock_guard lock(d.mu);
  auto& pool = d.pools[device];
  if (!pool) {
    pool = std::make_unique<ArenaPool>(make(), 1);
    if (auto it = d.limits.find(device); it != d.limits.end()) pool->SetLimit(it->second);
  }
  return *pool;
}

std::vector<DeviceMemoryStats> DeviceMemoryPools() {
  DevicePools& d = Devices();
  std::lock_guard lock(d.mu);
  std::vector<DeviceMemoryStats> out;
  for (const auto& [device, pool] : d.pools) {
    out.push_back(pool->stats());
    out.back().device = device;
  }
  return out;
}

void SetDeviceMemoryLimit(int device, int64_t bytes) {
  DevicePools& d = Devices();
  std::lock_guard lock(d.mu);
  d.limits[device] = bytes;
  if (auto it = d.pools.find(device); it != d.pools.end()) it->second->SetLimit(bytes);
}

int64_t TrimDeviceMemory(int64_t keep_bytes, int device) {
  DevicePools& d = Devices();
  std::lock_guard lock(d.mu);
  int64_t freed = 0;
  for (auto& [id, pool] : d.pools) {
    if (device < 0 || id == device) freed += pool->Trim(keep_bytes);
  }
  return freed;
}

}  // namespace lipsync
