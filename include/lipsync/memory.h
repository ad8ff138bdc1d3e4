// Memory belongs to the device, not to the model. Every engine on the host draws its working memory
// (activations and per-run buffers) from one process-wide pool, so that N loaded models cost their
// weights N times but their working memory only as often as they run at once.
//
// The pool keeps freed blocks for reuse (a model asks for the same sizes on every run of a batch
// size), but never more than twice the most it has had in use at once (each size is most in use
// at its own moment, so repeating runs need more than their peak cached; under a limit, within
// it): a free block is taken back, and blocks are given back to the system before a new
// allocation would make the pool larger than that. Blocks not reused for a while (SetMaxAge) go
// back to the system, so the memory of one large batch does not stay. Blocks of 2 MiB and more
// are pages of their own, in transparent huge pages on Linux when there is no limit (fresh memory
// then costs a fault per 2 MiB). A limit (SetLimit) caps what runs may hold: past
// it the cache is given back first, then allocations fail, which a run reports as
// RESOURCE_EXHAUSTED instead of the process being killed for want of memory.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lipsync {

// What an engine holds, as its backend allocated it (0 where a backend has none).
struct EngineMemory {
  int64_t host_weights = 0;    // weights and constants in host memory
  int64_t device_weights = 0;  // weights in GPU memory
  // Working memory is not an engine's: the host pool's below, the device pools' further down.
};

struct HostMemoryStats {
  int64_t weights = 0;         // blocks engines allocated while loading
  int64_t working_in_use = 0;  // blocks runs allocated and have not freed
  int64_t cached = 0;          // freed blocks kept for reuse
  int64_t peak_working = 0;    // the most working_in_use since the last ResetPeak()
  int64_t limit = 0;           // working_in_use + cached at most (0: none)
  int64_t trimmed_total = 0;   // bytes given back to the system so far
  int64_t refused_total = 0;   // allocations refused by the limit (or injected failures)
  int64_t fresh_total = 0;     // working bytes taken from the system (not reused) so far
};

class HostMemoryPool {
 public:
  // The process-wide pool (every ONNX Runtime session allocates from it).
  static HostMemoryPool& Get();

  enum class Kind { kWeights, kWorking };
  // 64-byte aligned; nullptr past the limit or when the system has no memory.
  void* Allocate(size_t bytes, Kind kind);
  void Free(void* p);

  HostMemoryStats stats() const;
  // Weight bytes this thread has allocated so far (only grows): its difference across an engine's
  // creation is what the engine's weights took, whatever other threads load meanwhile.
  static int64_t ThreadWeightBytes();
  // Working allocations refused on this thread so far (only grows): a run that sees it grow failed
  // for want of memory.
  static int64_t ThreadRefusals();
  // Starts a new peak from the working memory in use now; returns the previous peak.
  int64_t ResetPeak();
  // Gives cached blocks back, least recently freed first, until at most `keep_bytes` stay cached.
  // Returns the bytes given back.
  int64_t Trim(int64_t keep_bytes);
  // Cached blocks unused this long go back to the system (checked as the pool is used, and by
  // Trim(-1)). Default: 5 s.
  void SetMaxAge(std::chrono::steady_clock::duration age);
  // Working memory in use plus cached at most; 0: no limit. Lowering it gives the cache back at
  // once.
  void SetLimit(int64_t bytes);

  // Tests: the next `count` working allocations fail as if past the limit.
  void FailNextAllocations(int count);

 private:
  HostMemoryPool() = default;
  struct State;
  static State& state();
};

inline HostMemoryPool& HostMemory() { return HostMemoryPool::Get(); }

// GPU working memory (the CUDA backend's activation arenas and input/output buffers) follows the
// same rule: one pool per device, with one arena per concurrent run that every engine on the
// device borrows in turn, grown to the largest run's need. A run that would take the pool past its
// limit first frees the arenas no run holds, then fails with RESOURCE_EXHAUSTED.
struct DeviceMemoryStats {
  int device = 0;
  int slots = 0;               // runs that can hold an arena at once
  int waiting = 0;             // runs waiting for a free slot now
  int64_t working_in_use = 0;  // arenas runs hold now
  int64_t cached = 0;          // arenas of idle slots, kept for the next run
  int64_t peak_working = 0;    // the most working_in_use since start
  int64_t limit = 0;           // working_in_use + cached at most (0: none)
  int64_t trimmed_total = 0;   // bytes given back to the device so far
  int64_t refused_total = 0;   // runs refused by the limit or for want of device memory
};

// One entry per device that has a pool (a CUDA engine ran there), by device id.
std::vector<DeviceMemoryStats> DeviceMemoryPools();
// Caps `device`'s working memory (0: none); also applies to a pool made later.
void SetDeviceMemoryLimit(int device, int64_t bytes);
// On `device` (-1: every device), frees idle arenas until at most `keep_bytes` stay cached; -1:
// only those unused for a minute. Returns the bytes given back.
int64_t TrimDeviceMemory(int64_t keep_bytes, int device = -1);

// A block of working memory from the pool, given back when it goes; empty (false) when the pool
// refused it.
class PoolBlock {
 public:
  explicit PoolBlock(size_t bytes)
      : data_(bytes ? HostMemory().Allocate(bytes, HostMemoryPool::Kind::kWorking) : nullptr) {}
  ~PoolBlock() { HostMemory().Free(data_); }
  PoolBlock(const PoolBlock&) = delete;
  PoolBlock& operator=(const PoolBlock&) = delete;
  explicit operator bool() const { return data_ != nullptr; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_;
};

}  // namespace lipsync
