
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <vector>

#include "core/platform.h"
#include "lipsync/memory.h"

namespace lipsync {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kAlign = 64;          // what ONNX Runtime's kernels (MLAS) expect
constexpr size_t kHeader = kAlign;     // the block's size and kind live just before it
constexpr size_t kCacheMin = 1 << 18;  // smaller blocks go straight back to malloc
constexpr size_t kGrain = 1 << 16;     // large sizes rounded up, so that near sizes share blocks
// Blocks this large (with their header) are pages of their own from the system, given back when
// freed. Without a limit they are huge pages where the system has them: a run's fresh blocks then
// cost a fault per 2 MiB rather than per 4 KiB (a live session's first batches after an idle trim
// took 200 ms each in small pages, 28 ms in huge ones). Under a limit they are not: the parts of a
// block a run never touches then stay out of resident memory (53 MiB of the budget test's peak).
constexpr size_t kPagesMin = size_t{2} << 20;
constexpr uint32_t kMagic = 0x6c73706d;
// What the cache may hold beyond the most in use (within the limit, under one). Blocks are reused
// by size, and each size is most in use at its own moment, so runs that repeat need more cached
// bytes than their peak: at 1x the least recently freed block, the next one a repeating run needs,
// was the one given back, and two render runs in turn allocated every block afresh (8.4 M page
// faults for 162 frames against 0.6 M at 2x; 1.5x still missed 8% of the blocks). Under a host
// budget 1x made every batch of the demo UNet take its whole working set afresh, 3.1 s against
// 0.34 s at batch 8 on two cores.
constexpr int64_t kSlack = 2;

struct Header {
  size_t size;  // usable bytes
  uint32_t kind;
  uint32_t magic;
};
static_assert(sizeof(Header) <= kHeader);

thread_local int64_t thread_weight_bytes = 0;
thread_local int64_t thread_refusals = 0;

size_t RoundUp(size_t bytes) {
  const size_t grain = bytes >= kCacheMin ? kGrain : kAlign;
  return (bytes + grain - 1) / grain * grain;
}

// A block of `size` usable bytes after its header (the header not yet written).
char* NewBlock(size_t size, bool huge) {
  const size_t total = kHeader + size;
  return static_cast<char*>(total >= kPagesMin ? platform::AllocatePages(total, huge)
                                               : platform::AlignedAlloc(kAlign, total));
}

// Frees a block made by NewBlock; true when it went back to the heap and was large enough that
// the heap's free memory is worth handing back to the system now.
bool FreeBlock(char* base) {
  const size_t total = kHeader + reinterpret_cast<const Header*>(base)->size;
  if (total >= kPagesMin) {
    platform::FreePages(base, total);
    return false;
  }
  platform::AlignedFree(base);
  return total >= kCacheMin;
}

}  // namespace

struct HostMemoryPool::State {
  struct Cached {
    char* base;
    size_t size;
    Clock::time_point freed;
  };
  using Lru = std::list<Cached>;

  std::mutex mu;
  Lru lru;                                       // least recently freed first
  std::multimap<size_t, Lru::iterator> by_size;  // the same blocks by size
  int64_t weights = 0, in_use = 0, cached = 0;
  int64_t peak = 0;        // since ResetPeak
  int64_t high_water = 0;  // the most in use since the pool was last idle (or trimmed empty)
  int64_t limit = 0, trimmed = 0, refused = 0, fresh = 0;
  Clock::duration max_age = std::chrono::seconds(5);
  std::atomic<int> fail_next{0};
  std::vector<char*> to_free;  // blocks to free once the lock is dropped

  void DropFront() {
    const auto it = lru.begin();
    auto range = by_size.equal_range(it->size);
    for (auto b = range.first; b != range.second; ++b) {
      if (b->second == it) {
        by_size.erase(b);
        break;
      }
    }
    to_free.push_back(it->base);
    cached -= static_cast<int64_t>(it->size);
    trimmed += static_cast<int64_t>(it->size);
    lru.pop_front();
  }
  // Blocks unused for max_age go back. When that empties the cache the pool has been idle that
  // long, and the most in use starts again from what is in use now: the working set of one large
  // batch is not kept for ever. (Blocks dropped to make room keep the high water: resetting it
  // there made one miss empty the whole cache.)
  void DropAged(Clock::time_point now) {
    if (lru.empty() || now - lru.front().freed < max_age) return;
    while (!lru.empty() && now - lru.front().freed >= max_age) DropFront();
    if (lru.empty()) high_water = in_use;
  }
  // A cached block of at least `size` and at most a quarter more, or nullptr. Under a limit only
  // one of exactly `size`: a larger block counts its whole size, so a run that reuses the last
  // run's blocks would need up to a quarter more of the limit than the same run on a cold pool.
  char* Reuse(size_t size, size_t* got) {
    auto it = by_size.lower_bound(size);
    const size_t most = limit > 0 ? size : size + size / 4;
    if (it == by_size.end() || it->first > most) return nullptr;
    char* base = it->second->base;
    *got = it->first;
    lru.erase(it->second);
    by_size.erase(it);
    cached -= static_cast<int64_t>(*got);
    return base;
  }
  // Frees what DropFront collected; call without the lock.
  static void FreeAll(std::vector<char*>& blocks) {
    bool heap = false;
    for (char* b : blocks) heap = FreeBlock(b) || heap;
    if (heap) platform::ReturnFreeHeapMemory();
    blocks.clear();
  }
};

HostMemoryPool& HostMemoryPool::Get() {
  static HostMemoryPool pool;
  return pool;
}

HostMemoryPool::State& HostMemoryPool::state() {
  static State s;
  return s;
}

void* HostMemoryPool::Allocate(size_t bytes, Kind kind) {
  State& s = state();
  size_t size = RoundUp(bytes == 0 ? 1 : bytes);
  char* base = nullptr;
  bool refused = false, huge = false;
  std::vector<char*> release;
  {
    std::lock_guard lock(s.mu);
    huge = s.limit == 0;
    s.DropAged(Clock::now());
    if (kind == Kind::kWeights) {
      s.weights += static_cast<int64_t>(size);
      thread_weight_bytes += static_cast<int64_t>(size);
    } else if (s.fail_next.load() > 0) {
      s.fail_next.fetch_sub(1);
      refused = true;
    } else {
      if (size >= kCacheMin) base = s.Reuse(size, &size);
      if (!base) {
        // The pool grows no larger than kSlack times the most it has had in use, and never past
        // the limit: cached blocks go back first, least recently freed first.
        const int64_t grown = s.in_use + static_cast<int64_t>(size);
        // A block of more than half the most in use (ONNX Runtime's planned block for a whole
        // run) gets no slack: two of them would be two runs' worth of memory kept for one.
        const bool slack = static_cast<int64_t>(size) * 2 <= s.high_water;
        int64_t cap = std::max((slack ? kSlack : 1) * s.high_water, grown);
        if (s.limit > 0) cap = std::min(cap, s.limit);
        while (!s.lru.empty() && grown + s.cached > cap) s.DropFront();
        refused = s.limit > 0 && grown > s.limit;
      }
      if (!refused) {
        if (!base) s.fresh += static_cast<int64_t>(size);  // taken back below if malloc fails
        s.in_use += static_cast<int64_t>(size);
        s.peak = std::max(s.peak, s.in_use);
        s.high_water = std::max(s.high_water, s.in_use);
      }
    }
    if (refused) ++s.refused;
    release.swap(s.to_free);
  }
  State::FreeAll(release);
  if (refused) {
    ++thread_refusals;
    return nullptr;
  }
  if (!base) base = NewBlock(size, huge);
  if (!base) {
    std::lock_guard lock(s.mu);
    if (kind == Kind::kWorking) s.fresh -= static_cast<int64_t>(size);
    (kind == Kind::kWorking ? s.in_use : s.weights) -= static_cast<int64_t>(size);
    ++s.refused;
    ++thread_refusals;
    return nullptr;
  }
  auto* header = reinterpret_cast<Header*>(base);
  header->size = size;
  header->kind = static_cast<uint32_t>(kind);
  header->magic = kMagic;
  return base + kHeader;
}

void HostMemoryPool::Free(void* p) {
  if (!p) return;
  State& s = state();
  char* base = static_cast<char*>(p) - kHeader;
  const Header header = *reinterpret_cast<Header*>(base);
  if (header.magic != kMagic) std::abort();  // not the pool's block: a bug that must stop here
  std::vector<char*> release;
  {
    std::lock_guard lock(s.mu);
    const auto now = Clock::now();
    if (header.kind == static_cast<uint32_t>(Kind::kWeights)) {
      s.weights -= static_cast<int64_t>(header.size);
      release.push_back(base);
    } else {
      s.in_use -= static_cast<int64_t>(header.size);
      const bool fits =
          s.limit <= 0 || s.in_use + s.cached + static_cast<int64_t>(header.size) <= s.limit;
      if (header.size >= kCacheMin && fits) {
        s.lru.push_back({base, header.size, now});
        s.by_size.emplace(header.size, std::prev(s.lru.end()));
        s.cached += static_cast<int64_t>(header.size);
      } else {
        release.push_back(base);
      }
    }
    s.DropAged(now);
    release.insert(release.end(), s.to_free.begin(), s.to_free.end());
    s.to_free.clear();
  }
  State::FreeAll(release);
}

HostMemoryStats HostMemoryPool::stats() const {
  State& s = state();
  std::lock_guard lock(s.mu);
  return {s.weights, s.in_use, s.cached, s.peak, s.limit, s.trimmed, s.refused, s.fresh};
}

int64_t HostMemoryPool::ThreadWeightBytes() { return thread_weight_bytes; }
int64_t HostMemoryPool::ThreadRefusals() { return thread_refusals; }

int64_t HostMemoryPool::ResetPeak() {
  State& s = state();
  std::lock_guard lock(s.mu);
  const int64_t previous = s.peak;
  s.peak = s.in_use;
  return previous;
}

int64_t HostMemoryPool::Trim(int64_t keep_bytes) {
  State& s = state();
  std::vector<char*> release;
  int64_t freed = 0;
  {
    std::lock_guard lock(s.mu);
    const int64_t before = s.trimmed;
    if (keep_bytes < 0) {
      s.DropAged(Clock::now());
    } else {
      while (!s.lru.empty() && s.cached > keep_bytes) s.DropFront();
      if (s.lru.empty()) s.high_water = s.in_use;
    }
    freed = s.trimmed - before;
    release.swap(s.to_free);
  }
  State::FreeAll(release);
  return freed;
}

void HostMemoryPool::SetMaxAge(std::chrono::steady_clock::duration age) {
  State& s = state();
  std::lock_guard lock(s.mu);
  s.max_age = age;
}

void HostMemoryPool::SetLimit(int64_t bytes) {
  State& s = state();
  std::vector<char*> release;
  {
    std::lock_guard lock(s.mu);
    s.limit = std::max<int64_t>(0, bytes);
    while (s.limit > 0 && !s.lru.empty() && s.in_use + s.cached > s.limit) s.DropFront();
    release.swap(s.to_free);
  }
  State::FreeAll(release);
}

void HostMemoryPool::FailNextAllocations(int count) { state().fail_next.store(count); }

}  // namespace lipsync
