// Working memory owned by a device and shared by every engine on it: one arena per slot, a slot
// per concurrent run. A run borrows a slot (one borrower at a time), grows its arena to what it
// needs and gives the slot back; the next run on that slot, of any engine, reuses the arena. So N
// engines on one device hold one set of arenas, as large as the largest run needed, not N.
//
// The pool knows nothing of the device: it calls an injected allocate/free pair (cudaMalloc and
// cudaFree for the CUDA backend; a fake in the tests). It keeps the accounting (in use, cached,
// peak), the limit (past it the arenas of idle slots are freed first, then the run is refused with
// RESOURCE_EXHAUSTED) and the trimming of idle arenas.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "lipsync/memory.h"
#include "lipsync/status.h"

namespace lipsync {

struct ArenaAllocator {
  std::function<void*(size_t bytes)> allocate;  // nullptr when the device has no memory
  std::function<void(void* p)> free;
};

class ArenaPool {
 public:
  using Clock = std::chrono::steady_clock;

  ArenaPool(ArenaAllocator allocator, int slots);
  ~ArenaPool();  // frees every arena; no lease may be left
  ArenaPool(const ArenaPool&) = delete;
  ArenaPool& operator=(const ArenaPool&) = delete;

  // A slot held by one run: its arena is the run's alone until the lease goes.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { Release(); }
    void* data() const { return data_; }
    size_t size() const { return size_; }
    int slot() const { return slot_; }
    // Changes whenever the slot's arena is allocated anew: what was built over the old address
    // (a captured CUDA graph) must be built again.
    uint64_t generation() const { return generation_; }
    void Release();

   private:
    friend class ArenaPool;
    ArenaPool* pool_ = nullptr;
    int slot_ = -1;
    void* data_ = nullptr;
    size_t size_ = 0;
    uint64_t generation_ = 0;
  };

  // Waits for a free slot (`preferred` when it is free, else one whose arena is large enough,
  // else the one with the largest arena) and makes its arena at least `bytes`; an arena that
  // grows is allocated anew and its contents are lost. ResourceExhausted when the arena would
  // take the pool past its limit, or the device has no memory, even with every idle arena freed.
  Result<Lease> Acquire(size_t bytes, int preferred = -1);

  // Whether an arena of this generation still exists (what was built over it may be used).
  bool Live(uint64_t generation) const;
  // At least `count` slots (engines that run more at once add slots).
  void EnsureSlots(int count);
  DeviceMemoryStats stats() const;
  // Frees idle arenas, least recently used first, until at most `keep_bytes` stay cached; -1:
  // only those unused for the max age. Returns the bytes freed.
  int64_t Trim(int64_t keep_bytes);
  // In use plus cached at most (0: none); lowering it frees idle arenas at once.
  void SetLimit(int64_t bytes);
  // Idle arenas unused this long are freed as the pool is used and by Trim(-1). Default: 60 s
  // (an arena freed costs its next run an allocation and the captured graphs).
  void SetMaxAge(Clock::duration age);
  // Starts a new peak from what is in use now; returns the previous peak.
  int64_t ResetPeak();

 private:
  struct Slot {
    void* data = nullptr;
    size_t size = 0;
    uint64_t generation = 0;
    bool busy = false;
    Clock::time_point last_used;
  };
  int PickLocked(size_t bytes, int preferred) const;
  void DropLocked(Slot& s);
  // Frees idle arenas, least recently used first, while `more()` says so.
  void DropIdleLocked(const std::function<bool()>& more);
  void DropAgedLocked(Clock::time_point now);
  void FreeCollected(std::vector<void*>& blocks);
  void ReleaseSlot(int slot);

  ArenaAllocator allocator_;
  mutable std::mutex mu_;
  std::condition_variable free_slot_;
  std::vector<Slot> slots_;
  std::vector<void*> to_free_;  // arenas to free once the lock is dropped
  int waiting_ = 0;
  int64_t in_use_ = 0, cached_ = 0, peak_ = 0, limit_ = 0, trimmed_ = 0, refused_ = 0;
  uint64_t next_generation_ = 0;
  Clock::duration max_age_ = std::chrono::seconds(60);
};

// The pool of CUDA device `device`, made on first use with the allocator `make` returns (and any
// limit SetDeviceMemoryLimit set for it); it lives as long as the process.
ArenaPool& DeviceArenaPool(int device, const std::function<ArenaAllocator()>& make);

}  // namespace lipsync
